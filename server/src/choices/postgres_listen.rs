//! The listening connection of a replica that follows PostgreSQL: `LISTEN`
//! on the channel every commit notifies, each notification a wake-up of
//! the follower (what changed is then read by revision).

use tokio_postgres::Config;

use super::postgres::CHANNEL;

/// One listening connection, until it ends.
pub(super) async fn listen_once<T>(
    config: &Config,
    tls: T,
    wake: &(dyn Fn() + Send + Sync),
) -> Result<(), tokio_postgres::Error>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    use futures_util::StreamExt as _;
    let (client, mut connection) = config.connect(tls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let listen = format!("LISTEN {CHANNEL}");
    let mut listening = std::pin::pin!(client.batch_execute(&listen));
    let mut listened = false;
    loop {
        tokio::select! {
            done = &mut listening, if !listened => {
                done?;
                listened = true;
                // Whatever was committed while it was away.
                wake();
            }
            message = messages.next() => match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => wake(),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}
