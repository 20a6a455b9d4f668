//! The maildrop: files sendmail left while the mail system was down.
use super::*;

/// Takes in every finished file in the maildrop directory. A file is
/// finished when sendmail set its owner-execute bit (Postfix's marker);
/// until then its mode is 0600 and, as root, pickup cannot even open it.
pub(super) async fn scan_maildrop(sh: &Shared, warned: &mut HashSet<String>) {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, SFlag};
    let dir_path = &sh.set.maildrop;
    let dir = match nix::dir::Dir::open(
        dir_path.as_path(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(e) => {
            if warned.insert(String::new()) {
                warn!("cannot open maildrop {}: {e}", dir_path.display());
            }
            return;
        }
    };
    let names: Vec<String> = {
        let mut d = dir;
        d.iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().ok().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect()
    };
    let dirfd = match std::fs::File::open(dir_path) {
        Ok(f) => OwnedFd::from(f),
        Err(_) => return,
    };
    for name in names {
        let fd = match openat(
            dirfd.as_fd(),
            name.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Not finished yet (still 0600), or gone.
            Err(nix::errno::Errno::EACCES) | Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => {
                if warned.insert(name.clone()) {
                    warn!("maildrop/{name}: {e}; skipped");
                }
                continue;
            }
        };
        let st = match nix::sys::stat::fstat(&fd) {
            Ok(st) => st,
            Err(_) => continue,
        };
        let kind = st.st_mode & SFlag::S_IFMT.bits();
        if kind != SFlag::S_IFREG.bits() {
            if warned.insert(name.clone()) {
                warn!(
                    "maildrop/{name}: uid={}: not a regular file; skipped",
                    st.st_uid
                );
            }
            continue;
        }
        if st.st_mode & 0o100 == 0 {
            continue;
        }
        let uid = st.st_uid;
        if st.st_nlink != 1 {
            warn!(
                "maildrop/{name}: uid={uid}: has {} links; removed unread",
                st.st_nlink
            );
            remove(&dirfd, &name);
            continue;
        }
        let limit = sh.set.message_size_limit + 2 * 1024 * 1024;
        if st.st_size as u64 > limit {
            warn!(
                "maildrop/{name}: uid={uid}: {} bytes exceed message_size_limit; removed",
                st.st_size
            );
            remove(&dirfd, &name);
            continue;
        }
        let data = match crate::fsutil::read_whole(&std::fs::File::from(fd), limit) {
            Ok(d) => d,
            Err(e) => {
                warn!("maildrop/{name}: {e}");
                continue;
            }
        };
        let sub = match parse_file(&data, sh.set.message_size_limit) {
            Ok(s) => s,
            Err(why) => {
                warn!("maildrop/{name}: uid={uid}: malformed submission ({why}); removed");
                remove(&dirfd, &name);
                continue;
            }
        };
        match submit(sh, uid, &sub).await {
            Ok(id) => {
                info!("{id}: taken from maildrop/{name}");
                remove(&dirfd, &name);
            }
            Err(r) if r.is_temporary() => {
                warn!("maildrop/{name}: uid={uid}: {}; will try again", r.text);
            }
            Err(r) => {
                warn!("maildrop/{name}: uid={uid}: refused: {}; removed", r.text);
                // sendmail exited 0 long ago: the submitter learns of the
                // refusal by mail, with the message, before the file goes.
                return_refused(sh, uid, &sub, &r.text).await;
                remove(&dirfd, &name);
            }
        }
    }
}

/// How much of a refused message goes back to its submitter (Postfix's
/// bounce_size_limit default).
pub(super) const RETURN_LIMIT: usize = 50_000;

/// Mails a refused maildrop submission back to the local user who wrote it,
/// from the null sender (so the notice itself can never bounce).
pub(super) async fn return_refused(sh: &Shared, uid: u32, sub: &Submission, why: &str) {
    let Ok(user) = user(sh, uid).await else {
        warn!("uid={uid}: no login name: the refusal is only in this log");
        return;
    };
    let Ok(to) = qualify(sh, &user.name, false) else {
        return;
    };
    let (host, origin) = (&sh.set.myhostname, &sh.set.myorigin);
    let mut text = format!(
        "From: MAILER-DAEMON@{origin} (Mail Delivery System)\r\n\
         To: <{to}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         This is the mail system at host {host}.\r\n\
         \r\n\
         A message you submitted with sendmail while the mail system was\r\n\
         down could not be accepted when the mail system started:\r\n\
         \r\n    {why}\r\n\
         \r\n\
         The message is returned below.\r\n\
         \r\n\
         --- returned message ---\r\n"
    )
    .into_bytes();
    let mut body = &sub.content[..sub.content.len().min(RETURN_LIMIT)];
    if body.len() < sub.content.len()
        && let Some(nl) = body.iter().rposition(|&c| c == b'\n')
    {
        body = &body[..=nl];
    }
    text.extend_from_slice(body);
    if !text.ends_with(b"\r\n") {
        text.extend_from_slice(b"\r\n");
    }
    let begin = sc::Begin {
        client: local_client(None),
        sender: String::new(),
        ret: 0,
        envid: String::new(),
        smtputf8: !to.is_ascii(),
        body_8bit: text.iter().any(|&c| c >= 0x80),
        trace: false,
        remote_headers: false,
        milter_ticket: 0,
        signable: true,
        requiretls: false,
    };
    let rcpt = [sc::Recipient {
        address: to.clone(),
        orcpt: String::new(),
        notify: 0,
    }];
    match crate::submit::to_cleanup(
        &sh.sb,
        sh.set.query,
        sh.set.transfer,
        begin,
        &rcpt,
        &text,
        |_| {},
    )
    .await
    {
        Ok(id) => info!("{id}: uid={uid}: refused maildrop submission returned to <{to}>"),
        Err(e) => warn!("uid={uid}: cannot return the refused submission to <{to}>: {e}"),
    }
}

pub(super) fn remove(dirfd: &OwnedFd, name: &str) {
    if let Err(e) =
        nix::unistd::unlinkat(dirfd.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
    {
        warn!("cannot remove maildrop/{name}: {e}");
    }
}

/// A maildrop file: the socket's frames, one after another, ending with End.
pub(super) fn parse_file(data: &[u8], limit: u64) -> Result<Submission, String> {
    let mut sub = None;
    for f in sp::file_frames(data) {
        let f = f.map_err(|e| e.to_string())?;
        let req = Request::decode(f, Vec::new()).map_err(|e| e.to_string())?;
        if absorb(&mut sub, req, limit).map_err(str::to_string)? {
            return sub.ok_or_else(|| "no begin".to_string());
        }
    }
    Err("truncated (no end)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(reqs: &[Request]) -> Vec<u8> {
        reqs.iter().flat_map(|r| r.encode()).collect()
    }

    #[test]
    fn maildrop_files_parse_and_refuse_garbage() {
        let good = frames(&[
            Request::Begin(Begin::default()),
            Request::Recipients(vec!["a@b.example".into()]),
            Request::Content(b"Subject: x\r\n\r\nhi\r\n".to_vec()),
            Request::End,
        ]);
        let s = parse_file(&good, 1000).unwrap();
        assert_eq!(s.recipients, vec!["a@b.example"]);
        assert!(!s.too_big);
        assert!(parse_file(&good[..good.len() - 3], 1000).is_err());
        assert!(parse_file(&good, 5).unwrap().too_big);
        assert!(parse_file(b"\xff\xff\xff\xffjunk", 1000).is_err());
        let no_begin = frames(&[Request::Content(b"x".to_vec()), Request::End]);
        assert!(parse_file(&no_begin, 1000).is_err());
        let twice = frames(&[
            Request::Begin(Begin::default()),
            Request::Begin(Begin::default()),
        ]);
        assert!(parse_file(&twice, 1000).is_err());
    }
}
