use super::*;

/// A length-delimited field.
fn string_field(number: u32, value: &[u8]) -> Vec<u8> {
    let mut out = key(number, 2);
    out.extend(encode_varint(value.len() as u64));
    out.extend_from_slice(value);
    out
}

fn key(number: u32, wire: u64) -> Vec<u8> {
    encode_varint((u64::from(number) << 3) | wire)
}

fn encode_varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// `message` framed as gRPC frames it, uncompressed.
fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend((message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

#[test]
fn the_field_is_read_as_a_protobuf_parser_reads_it() {
    // Other fields of every wire type before and after it.
    let mut message = key(3, 0);
    message.extend(encode_varint(300));
    message.extend(key(4, 1));
    message.extend([0; 8]);
    message.extend(string_field(1, b"u-42"));
    message.extend(key(5, 5));
    message.extend([0; 4]);
    message.extend(string_field(6, b"u-7"));
    assert_eq!(
        in_first_message(&framed(&message), &[1], 1024).unwrap(),
        "u-42"
    );
    // Absent: the empty string, as proto3 reads it.
    assert_eq!(in_first_message(&framed(&message), &[9], 1024).unwrap(), "");
    // Nested: field 1 of the message in field 2; what follows the first
    // message (a second message of a stream) is not read.
    let nested = string_field(2, &string_field(1, b"u-9"));
    let mut body = framed(&nested);
    body.extend(framed(&string_field(2, &string_field(1, b"u-1"))));
    assert_eq!(in_first_message(&body, &[2, 1], 1024).unwrap(), "u-9");
    assert_eq!(in_first_message(&body, &[3, 1], 1024).unwrap(), "");
}

#[test]
fn a_message_the_app_could_read_another_way_is_refused() {
    let refused = |body: &[u8], field: &[u32]| in_first_message(body, field, 64).unwrap_err();
    let mut twice = string_field(1, b"u-42");
    twice.extend(string_field(1, b"u-7"));
    assert!(refused(&framed(&twice), &[1]).contains("more than once"));
    // The message that leads to it twice: a parser merges both.
    let mut merged = string_field(2, &string_field(1, b"u-42"));
    merged.extend(string_field(2, &string_field(1, b"u-7")));
    assert!(refused(&framed(&merged), &[2, 1]).contains("field 2 comes more than once"));
    // Another wire type: a parser skips it as unknown, and reads the next.
    let mut other_type = key(1, 0);
    other_type.extend(encode_varint(42));
    other_type.extend(string_field(1, b"u-7"));
    assert!(refused(&framed(&other_type), &[1]).contains("wire type 0"));
    let mut group = key(7, 3);
    group.extend(key(7, 4));
    assert!(refused(&framed(&group), &[1]).contains("group"));
    let mut compressed = framed(&string_field(1, b"u-42"));
    compressed[0] = 1;
    assert!(refused(&compressed, &[1]).contains("compressed"));
    let big = framed(&string_field(1, &[b'a'; 100]));
    assert!(refused(&big, &[1]).contains("--max-first-message-bytes"));
    let whole = framed(&string_field(1, b"u-42"));
    assert!(refused(&whole[..whole.len() - 1], &[1]).contains("ended inside"));
    assert!(refused(&whole[..3], &[1]).contains("before its first message"));
    assert!(refused(&framed(&[0x0a, 0x05, b'u']), &[1]).contains("not valid protobuf"));
    assert!(refused(&framed(&[0xff; 11]), &[1]).contains("not valid protobuf"));
    assert!(refused(&framed(&string_field(1, b"u 42")), &[1]).contains("visible ASCII"));
    assert!(
        in_first_message(&framed(&string_field(1, &[b'a'; 3000])), &[1], 8192)
            .unwrap_err()
            .contains("at most 2048")
    );
}

#[test]
fn only_binary_protobuf_over_grpc_is_read() {
    for ok in [
        &b"application/grpc"[..],
        b"application/grpc+proto",
        b"Application/GRPC; charset=x",
        b"application/grpc-web+proto",
    ] {
        assert!(readable_content_type(ok).is_ok());
    }
    for refused in [
        &b"application/grpc+json"[..],
        b"application/grpc-web-text",
        b"application/json",
        b"",
    ] {
        assert!(readable_content_type(refused).is_err());
    }
}

#[test]
fn the_end_of_the_first_message_is_known_from_its_prefix() {
    assert_eq!(first_message_end(&[0, 0, 0]), None);
    assert_eq!(first_message_end(&[0, 0, 0, 1, 0]), Some(261));
    assert_eq!(field_name(&[2, 1]), "2.1");
}

#[test]
fn a_path_segment_is_decoded_as_a_router_decodes_it() {
    assert_eq!(in_path("/customers/u%2D42/orders", 2).unwrap(), "u-42");
    assert!(in_path("/customers/", 2).unwrap_err().contains("lacks"));
    assert!(in_path("/customers/u%4", 2).is_ok());
    assert!(
        in_path("/customers/u%zz1", 2)
            .unwrap_err()
            .contains("bad escape")
    );
    assert!(
        in_path("/customers/u%2042", 2)
            .unwrap_err()
            .contains("visible ASCII")
    );
}
