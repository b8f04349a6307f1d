//! Which argument each value on a command line is given to, read as clap
//! reads it ([`owners`]): clap's error does not say whether a refused value
//! was typed or came from a variable, nor which argument a non-UTF-8 value
//! was meant for, and the message must name it.

use std::ffi::OsString;

/// Each value on the command line `args` (program name first) with the
/// argument of `command` it is given to, as clap reads them: `--flag=V`,
/// `--flag V`, `-fV`, `-f V`, subcommands, positionals in order (one that
/// takes several values keeps the rest), and everything after `--` for the
/// trailing positional. `None`: no argument takes it (clap refuses it).
pub(super) fn owners(
    command: &clap::Command,
    args: &[OsString],
) -> Vec<(OsString, Option<clap::Arg>)> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::new();
    // The commands entered, outermost first: flags are looked up innermost first.
    let mut path: Vec<&clap::Command> = vec![command];
    let mut position = 0; // of the next positional in the innermost command
    let mut rest = false; // after `--`
    let mut it = args.iter().skip(1);
    let flag = |path: &[&clap::Command], pred: &dyn Fn(&clap::Arg) -> bool| {
        path.iter()
            .rev()
            .find_map(|c| c.get_arguments().find(|a| pred(a)).cloned())
    };
    let takes_value = |a: &clap::Arg| a.get_action().takes_values();
    while let Some(token) = it.next() {
        let cmd = *path.last().unwrap();
        let bytes = token.as_bytes();
        let positionals: Vec<&clap::Arg> = {
            let mut p: Vec<&clap::Arg> = cmd.get_positionals().collect();
            p.sort_by_key(|a| a.get_index());
            p
        };
        if rest {
            let last = positionals
                .iter()
                .rev()
                .find(|a| a.is_last_set())
                .or(positionals.last());
            out.push((token.clone(), last.map(|a| (*a).clone())));
            continue;
        }
        if bytes == b"--" {
            rest = true;
            continue;
        }
        if let Some(long) = bytes.strip_prefix(b"--") {
            let (name, inline) = match long.iter().position(|&b| b == b'=') {
                Some(eq) => (&long[..eq], Some(&long[eq + 1..])),
                None => (long, None),
            };
            let arg = flag(&path, &|a| a.get_long().map(str::as_bytes) == Some(name));
            match (arg, inline) {
                (arg, Some(value)) => out.push((OsString::from_vec(value.to_vec()), arg)),
                (Some(arg), None) if takes_value(&arg) => {
                    if let Some(value) = it.next() {
                        out.push((value.clone(), Some(arg)));
                    }
                }
                _ => {}
            }
            continue;
        }
        if bytes.len() > 1 && bytes[0] == b'-' {
            // A cluster of short flags; the first that takes a value takes the rest.
            let mut i = 1;
            while i < bytes.len() {
                let c = bytes[i] as char;
                let arg = flag(&path, &|a| a.get_short() == Some(c));
                i += 1;
                match arg {
                    Some(arg) if takes_value(&arg) => {
                        let value = bytes[i..].strip_prefix(b"=").unwrap_or(&bytes[i..]);
                        if !value.is_empty() {
                            out.push((OsString::from_vec(value.to_vec()), Some(arg)));
                        } else if let Some(value) = it.next() {
                            out.push((value.clone(), Some(arg)));
                        }
                        break;
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            continue;
        }
        if position == 0 {
            if let Some(sub) = token.to_str().and_then(|name| {
                cmd.get_subcommands()
                    .find(|s| s.get_name() == name || s.get_all_aliases().any(|a| a == name))
            }) {
                path.push(sub);
                continue;
            }
        }
        let ordinary: Vec<&&clap::Arg> = positionals.iter().filter(|a| !a.is_last_set()).collect();
        let arg = ordinary
            .get(position)
            .or(ordinary.last())
            .map(|a| (**a).clone());
        let several = arg
            .as_ref()
            .and_then(|a| a.get_num_args())
            .is_some_and(|n| n.max_values() > 1);
        if !several {
            position += 1;
        }
        out.push((token.clone(), arg));
    }
    out
}
