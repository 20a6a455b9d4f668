//! `postern passwd USER`: sets a SASL password (the auth role sees it at
//! once). On a terminal it asks twice without echo; otherwise it reads the
//! password twice from standard input, one line each, so that scripts and
//! image builders can provision users. `-d USER` removes one.
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use postern_config::Role;

use super::{fail, load};
use crate::{master, passwd, roles};

fn read_line_noecho(prompt: &str) -> Result<String, String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let old = tcgetattr(&stdin).map_err(|e| format!("terminal: {e}"))?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(|e| format!("terminal: {e}"))?;
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &old);
    eprintln!();
    r.map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_password() -> Result<String, String> {
    let (a, b) = if std::io::stdin().is_terminal() {
        (
            read_line_noecho("Password: ")?,
            read_line_noecho("Again: ")?,
        )
    } else {
        let mut lines = std::io::stdin().lock().lines();
        let mut next = || -> Result<String, String> {
            match lines.next() {
                Some(Ok(l)) => Ok(l.trim_end_matches('\r').to_string()),
                Some(Err(e)) => Err(format!("cannot read the password: {e}")),
                None => Err("expected the password twice on standard input, one line each".into()),
            }
        };
        (next()?, next()?)
    };
    if a != b {
        return Err("the two passwords differ; nothing changed".into());
    }
    if a.is_empty() {
        return Err("empty password refused; nothing changed".into());
    }
    Ok(a)
}

pub fn run(dir: Option<&std::path::Path>, user: &str, delete: bool) -> ExitCode {
    let Some((_, params)) = load(dir) else {
        return ExitCode::FAILURE;
    };
    if !passwd::valid_user(user) {
        return fail(format!(
            "bad user name \"{user}\": use printable characters without ':' or spaces"
        ));
    }
    // Creates the directories (with their owners) when run before the
    // first start, as image builders do.
    if let Err(e) = master::dirs::prepare(&params) {
        return fail(e);
    }
    let path = std::path::PathBuf::from(params.str("smtpd_sasl_password_file"));
    let owner = nix::unistd::Uid::effective()
        .is_root()
        .then(|| (0, roles::ids(Role::Auth, &params).1));
    let password = if delete {
        None
    } else {
        match read_password() {
            Ok(p) => Some(p),
            Err(e) => return fail(e),
        }
    };
    match passwd::update(&path, user, password.as_deref().map(str::as_bytes), owner) {
        Ok(true) if delete => {
            eprintln!("postern: removed {user} from {}", path.display());
            ExitCode::SUCCESS
        }
        Ok(false) => fail(format!("no user {user} in {}", path.display())),
        Ok(_) => {
            eprintln!("postern: password for {user} set in {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}
