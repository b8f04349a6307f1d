//! Authentication with `--etcd-user`: the password read from a trusted
//! file, a token asked of `/v3/auth/authenticate` once and sent in the
//! `Authorization` header, and forgotten when etcd refuses it (expired), so
//! that the next call authenticates again.
//!
//! The password is never taken from the command line, and its file is
//! checked as SPEC §1 asks of a file that is trusted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ccci_common::dirs::Role;
use ccci_common::names::{quote_path, shell_quote};

use super::client::{read_short, CallError, Client, Setup, ATTEMPT};
use super::messages::{decode, AuthenticateRequest, AuthenticateResponse};
use super::tls::MAX_FILE;
use super::Auth;

/// The password file, for messages and the safety checks.
const PASSWORD_FILE: Role = Role {
    what: "etcd password file",
    flag: "--etcd-password-file",
    env: "CCCI_ETCD_PASSWORD_FILE",
};

/// Who to log in as: the user, its password, and the file it came from.
pub(super) struct Login {
    pub user: String,
    pub password: String,
    pub file: PathBuf,
}

/// Reads the password of `auth` (its first line) from its file, checked.
pub(super) fn login(auth: &Auth) -> Result<Login, String> {
    let bytes = ccci_common::fs::read_trusted_file(&PASSWORD_FILE, &auth.password_file, MAX_FILE)
        .map_err(|e| format!("{e:#}"))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        format!(
            "etcd password file {} is not UTF-8",
            quote_path(&auth.password_file)
        )
    })?;
    let password = text.lines().next().unwrap_or("").to_string();
    Ok(Login {
        user: auth.user.clone(),
        password,
        file: auth.password_file.clone(),
    })
}

impl Client {
    /// Drops the token so that the next call authenticates again; `false`
    /// when no user is configured (nothing to renew).
    pub(super) fn forget_token(&self) -> bool {
        let has_login = matches!(&self.setup, Ok(setup) if setup.login.is_some());
        if has_login {
            *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        has_login
    }

    /// The token to send, authenticating first when there is none.
    pub(super) fn token(
        &self,
        setup: &Setup,
        deadline: Instant,
    ) -> Result<Option<Arc<str>>, CallError> {
        let Some(Login {
            user,
            password,
            file,
        }) = &setup.login
        else {
            return Ok(None);
        };
        if let Some(token) = self.token.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(Some(token));
        }
        let body = AuthenticateRequest {
            name: user,
            password,
        };
        let body = serde_json::to_string(&body).map_err(|e| {
            CallError::Setup(format!("cannot write the authentication request: {e}"))
        })?;
        let text = self
            .send_once(
                setup,
                "/v3/auth/authenticate",
                &body,
                deadline,
                ATTEMPT,
                None,
                &read_short,
            )
            .map_err(|e| match e {
                CallError::Refused(why) | CallError::BadToken(why) => CallError::Setup(format!(
                    "etcd refused to authenticate user {} with the password in {}: {why}",
                    shell_quote(user),
                    quote_path(file)
                )),
                other => other,
            })?;
        let answer: AuthenticateResponse = decode(text.as_bytes()).unwrap_or_default();
        if answer.token.is_empty() {
            return Err(CallError::Setup(format!(
                "etcd answered the authentication of user {} with no token",
                shell_quote(user)
            )));
        }
        let token: Arc<str> = Arc::from(answer.token);
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&token));
        Ok(Some(token))
    }
}
