//! Key material named on a command line, never given in it (issue 13, item 8): `@FILE` reads
//! the key from FILE (which must not be readable by group or others), `-` reads one line from
//! standard input. A literal key is refused: argv is visible to every local user (`ps`,
//! `/proc/PID/cmdline`). The key only ever lives in zeroizing buffers.

use std::io::{BufRead, Read};
use std::path::Path;

use zeroize::Zeroizing;

/// How to pass a key, for refusals.
pub const HOW: &str = "write the key to a file only you can read (chmod 600 FILE) and give \
                       @FILE, or give - and write the key to standard input";

/// Reads the key `arg` names (`@FILE` or `-`, with `stdin` for `-`), trimmed. `what` names the
/// argument in errors (e.g. `sa_add "key"`).
///
/// # Errors
/// A literal key, an unreadable file, a file readable by group or others (with the fix), an
/// empty key. No error quotes key bytes.
pub fn read(arg: &str, what: &str, stdin: &mut dyn BufRead) -> Result<Zeroizing<String>, String> {
    let raw = if let Some(file) = arg.strip_prefix('@') {
        read_file(Path::new(file), what)?
    } else if arg == "-" {
        let mut line = Zeroizing::new(String::with_capacity(256));
        stdin
            .read_line(&mut line)
            .map_err(|e| format!("{what}: cannot read the key from standard input: {e}"))?;
        line
    } else {
        return Err(format!(
            "{what}: a key on the command line is visible to every local user (ps, \
             /proc/PID/cmdline), so it is refused: {HOW}"
        ));
    };
    let key = Zeroizing::new(raw.trim().to_owned());
    if key.is_empty() {
        return Err(format!("{what}: the key is empty"));
    }
    Ok(key)
}

/// Reads a key file after checking that only its owner can read it.
///
/// # Errors
/// An unreadable file or one readable by group or others (the message says `chmod 600`).
pub fn read_file(path: &Path, what: &str) -> Result<Zeroizing<String>, String> {
    let shown = path.display();
    let mut f = std::fs::File::open(path)
        .map_err(|e| format!("{what}: cannot read key file {shown}: {e}"))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{what}: cannot read key file {shown}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{what}: key file {shown} is readable by group or others (mode {mode:04o}); \
                 fix: chmod 600 {shown}"
            ));
        }
    }
    let cap = usize::try_from(meta.len()).unwrap_or(0).min(1 << 16) + 1;
    let mut buf = Zeroizing::new(Vec::with_capacity(cap));
    f.by_ref()
        .take(1 << 16)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{what}: cannot read key file {shown}: {e}"))?;
    let text = std::str::from_utf8(&buf)
        .map_err(|_| format!("{what}: key file {shown} is not text (hex digits expected)"))?;
    Ok(Zeroizing::new(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn literal_refused_file_checked_stdin_read() {
        let e = read("00112233", "sa_add \"key\"", &mut Cursor::new("")).unwrap_err();
        assert!(
            e.contains("@FILE") && e.contains("chmod 600") && !e.contains("0011"),
            "{e}"
        );
        let k = read("-", "k", &mut Cursor::new("  abcd \nrest")).unwrap();
        assert_eq!(k.as_str(), "abcd");
        assert!(read("-", "k", &mut Cursor::new(""))
            .unwrap_err()
            .contains("empty"));
        let dir = std::env::temp_dir().join(format!("secret-arg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("key");
        std::fs::write(&p, "beef\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
            let e = read(&format!("@{}", p.display()), "k", &mut Cursor::new("")).unwrap_err();
            assert!(e.contains("mode 0640") && e.contains("chmod 600"), "{e}");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let k = read(&format!("@{}", p.display()), "k", &mut Cursor::new("")).unwrap();
        assert_eq!(k.as_str(), "beef");
        let e = read("@/nonexistent/key", "k", &mut Cursor::new("")).unwrap_err();
        assert!(e.contains("cannot read key file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
