//! The signals that end a cluster: Ctrl-C, a scheduler's cancel (SIGTERM), a lost terminal
//! (SIGHUP), and the scheduler's walltime warning, which the job templates ask for: SIGUSR1
//! where the scheduler signals only the batch shell, SIGURG where it signals every process of
//! the job (Ray's processes ignore SIGURG; SIGUSR1 would end them at once).

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Signals {
    streams: Vec<(i32, Signal)>,
}

impl Signals {
    pub fn new() -> std::io::Result<Self> {
        let kinds = [
            (libc::SIGINT, SignalKind::interrupt()),
            (libc::SIGTERM, SignalKind::terminate()),
            (libc::SIGHUP, SignalKind::hangup()),
            (libc::SIGUSR1, SignalKind::user_defined1()),
            (libc::SIGURG, SignalKind::from_raw(libc::SIGURG)),
        ];
        let mut streams = Vec::new();
        for (num, kind) in kinds {
            streams.push((num, signal(kind)?));
        }
        Ok(Signals { streams })
    }

    /// Waits for the next signal and returns its number.
    pub async fn recv(&mut self) -> i32 {
        let futures = self.streams.iter_mut().map(|(num, s)| {
            let num = *num;
            Box::pin(async move {
                s.recv().await;
                num
            })
        });
        let (num, _, _) = futures_select_all(futures).await;
        tracing::info!("received signal {num}");
        num
    }
}

async fn futures_select_all<F: std::future::Future<Output = i32> + Unpin>(
    futures: impl Iterator<Item = F>,
) -> (i32, usize, ()) {
    let mut futures: Vec<F> = futures.collect();
    std::future::poll_fn(|cx| {
        for (i, f) in futures.iter_mut().enumerate() {
            if let std::task::Poll::Ready(n) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready((n, i, ()));
            }
        }
        std::task::Poll::Pending
    })
    .await
}
