//! Where a call names whose data it touches: the `x-data-subject` header
//! (the default), or what its route says — a segment of the path the app
//! routes on, or a field of a gRPC call's first request message, read
//! from the wire as the app's protobuf parser reads it.
//!
//! What is judged must be what the app reads, so a message the app could
//! read another way is refused, never guessed at: the field twice (a
//! parser keeps the last), with another wire type (a parser skips it as
//! unknown), inside a group, compressed, cut short or over the bound.

/// Where a route reads the data subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectFrom {
    /// The call's Nth path segment, from 1.
    PathSegment(usize),
    /// A string field of the first request message: its field number, or
    /// the numbers of the message fields that lead to it (`[2, 1]`: field
    /// 1 of the message in field 2).
    GrpcField(Vec<u32>),
}

/// Deepest a field path may go.
pub const MAX_FIELD_DEPTH: usize = 8;
/// The largest field number protobuf allows.
pub const MAX_FIELD_NUMBER: u64 = (1 << 29) - 1;

/// The first request message's bytes as read, with their gRPC framing:
/// what the route needs to name the data subject.
#[derive(Debug, Clone, Copy)]
pub enum FirstMessage<'a> {
    /// The bytes of the call's body read so far (at least the whole first
    /// message, unless the body ended before it).
    Read(&'a [u8]),
    /// Not read, and why (no body was given to the sidecar).
    Unread(&'a str),
}

/// `field` as written in the routes file and in reasons: `1`, `2.1`.
pub fn field_name(field: &[u32]) -> String {
    let names: Vec<String> = field.iter().map(u32::to_string).collect();
    names.join(".")
}

/// Whether a call of `content_type` carries protobuf messages the sidecar
/// can read: gRPC and gRPC-Web in their binary, protobuf form.
pub fn readable_content_type(content_type: &[u8]) -> Result<(), String> {
    let base = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let readable = [
        &b"application/grpc"[..],
        b"application/grpc+proto",
        b"application/grpc-web",
        b"application/grpc-web+proto",
    ]
    .iter()
    .any(|t| base.eq_ignore_ascii_case(t));
    if readable {
        Ok(())
    } else {
        Err(format!(
            "the route reads the data subject from the first request message, and content type `{}` is not binary protobuf over gRPC; it is refused",
            String::from_utf8_lossy(content_type)
        ))
    }
}

/// How many bytes of the body hold the first message, once its 5-byte
/// prefix has come: `None` while fewer than 5 bytes are known.
pub fn first_message_end(body: &[u8]) -> Option<usize> {
    let length: [u8; 4] = body.get(1..5)?.try_into().ok()?;
    let length = u32::from_be_bytes(length);
    Some(5usize.saturating_add(usize::try_from(length).unwrap_or(usize::MAX)))
}

/// The data subject in `field` of the first message of `body` (gRPC
/// framing included), whose message may be at most `max` bytes: the
/// field's string, empty when the field is absent (as the app reads it).
pub fn in_first_message(body: &[u8], field: &[u32], max: usize) -> Result<String, String> {
    let name = field_name(field);
    let Some(end) = first_message_end(body) else {
        return Err(format!(
            "the route reads the data subject from field {name} of the first request message, and the call's body ended before its first message began"
        ));
    };
    let (flag, length) = (body.first().copied().unwrap_or(0), end.saturating_sub(5));
    match flag {
        0 => {}
        1 => {
            return Err(format!(
                "the first request message is compressed (`grpc-encoding`); the data subject in its field {name} cannot be read, so the call is refused (send it uncompressed)"
            ));
        }
        other => {
            return Err(format!(
                "the first request message has a bad flag byte {other}"
            ));
        }
    }
    if length > max {
        return Err(format!(
            "the first request message is {length} bytes; the sidecar reads at most {max} to find the data subject (--max-first-message-bytes)"
        ));
    }
    let Some(message) = body.get(5..end) else {
        return Err(format!(
            "the call's body ended inside its first request message ({} of {length} bytes)",
            body.len().saturating_sub(5)
        ));
    };
    let mut current = message;
    for depth in 1..=field.len() {
        let at = field.get(..depth).unwrap_or(field);
        match field_once(current, at)? {
            Some(bytes) => current = bytes,
            None => return Ok(String::new()),
        }
    }
    let what = format!("field {name} of the first request message, the data subject,");
    checked(current, &what)
}

/// The data subject `bytes`, as any source must give one: visible ASCII,
/// within the length `x-data-subject` is held to.
pub fn checked(bytes: &[u8], what: &str) -> Result<String, String> {
    let subject = std::str::from_utf8(bytes)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| format!("{what} is not visible ASCII"))?;
    if subject.len() > purposegate_engine::MAX_SUBJECT_ID_BYTES {
        return Err(format!(
            "{what} is {} bytes long; at most {} are accepted",
            subject.len(),
            purposegate_engine::MAX_SUBJECT_ID_BYTES
        ));
    }
    Ok(subject.to_string())
}

/// The bytes of the last number of `path` in `message` (a length-delimited
/// field), read as a protobuf parser reads them; `None` if absent. Every
/// field of the message is walked, so a second occurrence or another wire
/// type is seen wherever it is.
fn field_once<'m>(message: &'m [u8], path: &[u32]) -> Result<Option<&'m [u8]>, String> {
    let number = path.last().copied().unwrap_or(0);
    let name = field_name(path);
    let malformed =
        || format!("the first request message is not valid protobuf (near field {name})");
    let mut rest = message;
    let mut found = None;
    while !rest.is_empty() {
        let (key, after) = varint(rest).ok_or_else(malformed)?;
        rest = after;
        let (this, wire) = (key >> 3, key & 7);
        if this == 0 || this > MAX_FIELD_NUMBER {
            return Err(malformed());
        }
        let value: &[u8];
        (value, rest) = match wire {
            0 => {
                let (_, after) = varint(rest).ok_or_else(malformed)?;
                (&[][..], after)
            }
            1 => (&[][..], rest.get(8..).ok_or_else(malformed)?),
            2 => {
                let (length, after) = varint(rest).ok_or_else(malformed)?;
                let length = usize::try_from(length).map_err(|_| malformed())?;
                let value = after.get(..length).ok_or_else(malformed)?;
                (value, after.get(length..).ok_or_else(malformed)?)
            }
            5 => (&[][..], rest.get(4..).ok_or_else(malformed)?),
            3 | 4 => {
                return Err(format!(
                    "the first request message holds a group (field {this}), which the sidecar does not read; it is refused"
                ));
            }
            _ => return Err(malformed()),
        };
        if this != u64::from(number) {
            continue;
        }
        if wire != 2 {
            return Err(format!(
                "field {name} of the first request message has wire type {wire}, not a string or message; the data subject cannot be read from it"
            ));
        }
        if found.is_some() {
            return Err(format!(
                "field {name} comes more than once in the first request message; the app would read the last, so the call is refused"
            ));
        }
        found = Some(value);
    }
    Ok(found)
}

/// A base-128 varint of at most 10 bytes, and what follows it.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, bytes.get(i + 1..)?));
        }
    }
    None
}

/// The data subject in the call's `n`th path segment (from 1): the
/// canonical path's segment, its escapes decoded as the app's router
/// decodes them, within the limits of the `x-data-subject` header.
pub fn in_path(path: &str, n: usize) -> Result<String, String> {
    let path = path.split('?').next().unwrap_or("");
    let segment = path
        .split('/')
        .filter(|s| !s.is_empty())
        .nth(n.saturating_sub(1))
        .ok_or_else(|| {
            format!("the route reads the data subject from path segment {n}, which `{path}` lacks")
        })?;
    let mut bytes = Vec::with_capacity(segment.len());
    let mut rest = segment.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        match (b, tail) {
            (b'%', [h, l, tail @ ..]) => {
                let hex = [*h, *l];
                let byte = std::str::from_utf8(&hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("path segment {n} holds a bad escape"))?;
                bytes.push(byte);
                rest = tail;
            }
            _ => {
                bytes.push(b);
                rest = tail;
            }
        }
    }
    checked(&bytes, &format!("path segment {n}, the data subject,"))
}

#[cfg(test)]
mod tests;
