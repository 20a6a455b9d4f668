//! Group commit: one `syncfs` on the queue's filesystem makes every write
//! before it durable, so a batch of waiting messages costs one journal
//! commit instead of one per file. A request is answered only by a sync
//! that started after the request arrived, so each 250 follows the sync
//! that covers its message.
use std::os::fd::OwnedFd;
use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct Syncer {
    tx: std_mpsc::Sender<Waiter>,
}

impl Syncer {
    /// Starts the sync thread for the filesystem holding `dir`.
    pub fn start(dir: OwnedFd) -> Syncer {
        let (tx, rx) = std_mpsc::channel::<Waiter>();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(w) = rx.try_recv() {
                        batch.push(w);
                    }
                    let r = nix::unistd::syncfs(&dir).map_err(|e| format!("syncfs: {e}"));
                    for w in batch {
                        let _ = w.send(r.clone());
                    }
                }
            })
            .expect("start the group-commit thread");
        Syncer { tx }
    }

    /// Waits until everything written before this call is durable.
    pub async fn sync(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .map_err(|_| "sync thread gone".to_string())?;
        rx.await.map_err(|_| "sync thread gone".to_string())?
    }
}
