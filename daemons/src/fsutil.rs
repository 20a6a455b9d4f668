//! Reading files that several processes share descriptors of.

/// Reads a whole file with positional reads (pread) until end of file.
/// Queue files reach qmgr, the delivery agents and `postern queue show` as
/// dups of one open file description, so nobody may move the shared file
/// offset; and no stat is needed (a jailed role may not stat).
pub fn read_whole(f: &impl std::os::fd::AsFd) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(f.as_fd().try_clone_to_owned()?);
    let mut buf = vec![0u8; 64 * 1024];
    let mut done = 0;
    loop {
        if done == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read_at(&mut buf[done..], done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    buf.truncate(done);
    Ok(buf)
}
