//! Queue-file descriptors qmgr keeps between deliveries, within a budget.
use std::os::fd::OwnedFd;
use std::rc::Rc;

/// Queue-file descriptors kept between deliveries (from the broker's feed,
/// in transit, loading or held); beyond this, a delivery asks the broker for
/// its file when it starts.
pub const MAX_HELD_FILES: usize = 128;

/// A queue file's descriptor kept between deliveries, counted against
/// [`MAX_HELD_FILES`] from the moment it arrives until it is dropped or
/// handed to a delivery.
pub struct HeldFile {
    fd: Option<OwnedFd>,
    count: Rc<std::cell::Cell<usize>>,
}

impl HeldFile {
    /// Keeps `fd` if the budget allows; else closes it.
    pub fn keep(count: &Rc<std::cell::Cell<usize>>, fd: OwnedFd) -> Option<HeldFile> {
        if count.get() >= MAX_HELD_FILES {
            return None;
        }
        count.set(count.get() + 1);
        Some(HeldFile {
            fd: Some(fd),
            count: count.clone(),
        })
    }

    /// The descriptor, out of the budget (a delivery takes it along).
    pub fn into_fd(mut self) -> OwnedFd {
        self.fd.take().expect("held")
    }

    pub fn try_clone(&self) -> std::io::Result<OwnedFd> {
        self.fd.as_ref().expect("held").try_clone()
    }
}

impl Drop for HeldFile {
    fn drop(&mut self) {
        self.count.set(self.count.get() - 1);
    }
}
