//! What a session's status allows, asked from outside the machine: is it
//! restored at boot, may it show a QR, may it give a pairing code. A refusal
//! is a typed reason whose `Display` is the message the API returns.

use thiserror::Error;

use crate::error::WebError;
use crate::model::{DesiredState, QrCode, SessionRecord, SessionStatus, SessionView};

/// The boot restore starts a session that should run, unless it `failed`
/// (a failed session waits for a person).
pub fn restored_at_boot(record: &SessionRecord) -> bool {
    record.desired == DesiredState::Running && record.status != SessionStatus::Failed
}

/// Why a session shows no QR code.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum QrUnavailable {
    #[error("The QR code of session '{session}' is not ready yet; try again in a few seconds")]
    NotReadyYet { session: String },
    #[error("Session '{session}' is already linked: no QR code is needed")]
    AlreadyLinked { session: String },
    #[error("Session '{session}' is not started (status {status}): start it to get a QR code")]
    NotStarted {
        session: String,
        status: SessionStatus,
    },
}

/// The QR code a session shows: only in `qr_ready`, once the engine gave one.
pub fn shown_qr(view: &SessionView) -> Result<&QrCode, QrUnavailable> {
    let session = view.record.name.clone();
    match (view.record.status, &view.qr) {
        (SessionStatus::QrReady, Some(qr)) => Ok(qr),
        (SessionStatus::Initializing | SessionStatus::QrReady, _) => {
            Err(QrUnavailable::NotReadyYet { session })
        }
        (SessionStatus::Authenticating | SessionStatus::Ready, _) => {
            Err(QrUnavailable::AlreadyLinked { session })
        }
        (status, _) => Err(QrUnavailable::NotStarted { session, status }),
    }
}

/// Why a session gives no pairing code.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PairingUnavailable {
    #[error("Session '{session}' is {status}: a pairing code is only available while it waits for a link (qr_ready)")]
    NotWaitingForLink {
        session: String,
        status: SessionStatus,
    },
    /// The engine showed a QR but its start has not returned yet.
    #[error("Session '{session}' is not connected yet; try again in a few seconds")]
    NotConnectedYet { session: String },
    /// No session actor runs (`session` is the id the supervisor was given).
    #[error("Session '{session}' is not started: start it first")]
    NotStarted { session: String },
}

/// A pairing code is only given while the session waits for a link.
pub fn pairing_allowed(session: &str, status: SessionStatus) -> Result<(), PairingUnavailable> {
    match status {
        SessionStatus::QrReady => Ok(()),
        status => Err(PairingUnavailable::NotWaitingForLink {
            session: session.to_string(),
            status,
        }),
    }
}

impl From<QrUnavailable> for WebError {
    fn from(why: QrUnavailable) -> Self {
        WebError::QrNotAvailable(why.to_string())
    }
}

impl From<PairingUnavailable> for WebError {
    fn from(why: PairingUnavailable) -> Self {
        WebError::PairingCodeNotAvailable(why.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;
    use SessionStatus::*;

    fn view(status: SessionStatus, desired: DesiredState, qr: bool) -> SessionView {
        let mut record = SessionRecord::new(Uuid::nil(), "bot".into(), Utc::now());
        record.status = status;
        record.desired = desired;
        SessionView {
            record,
            next_retry_at: None,
            restarts: 0,
            engine_alive: false,
            qr: qr.then(|| QrCode {
                text: "2@abc".into(),
                expires_at: Utc::now(),
            }),
        }
    }

    /// (status, desired, restored at boot)
    #[test]
    fn restore_table() {
        use DesiredState::{Running, Stopped};
        let cases = [
            (Ready, Running, true),
            (Disconnected, Running, true),
            (Initializing, Running, true),
            (QrReady, Running, true),
            (Failed, Running, false),
            (Ready, Stopped, false),
            (Disconnected, Stopped, false),
            (Created, Stopped, false),
        ];
        for (status, desired, want) in cases {
            let v = view(status, desired, false);
            assert_eq!(restored_at_boot(&v.record), want, "{status} {desired:?}");
        }
    }

    /// (status, QR given by the engine, the message of the refusal or None)
    #[test]
    fn qr_table() {
        let not_ready = "The QR code of session 'bot' is not ready yet; try again in a few seconds";
        let linked = "Session 'bot' is already linked: no QR code is needed";
        let cases = [
            (QrReady, true, None),
            (QrReady, false, Some(not_ready.to_string())),
            (Initializing, false, Some(not_ready.to_string())),
            (Authenticating, false, Some(linked.to_string())),
            (Ready, false, Some(linked.to_string())),
            (Ready, true, Some(linked.to_string())),
        ]
        .into_iter()
        .chain([Created, Disconnected, Failed].map(|s| {
            let msg =
                format!("Session 'bot' is not started (status {s}): start it to get a QR code");
            (s, false, Some(msg))
        }));
        for (status, qr, want) in cases {
            let v = view(status, DesiredState::Running, qr);
            let got = shown_qr(&v)
                .map(|q| q.text.clone())
                .map_err(|e| e.to_string());
            match want {
                None => assert_eq!(got, Ok("2@abc".to_string()), "{status}"),
                Some(msg) => assert_eq!(got, Err(msg), "{status} qr={qr}"),
            }
        }
    }

    #[test]
    fn pairing_only_while_waiting_for_a_link() {
        for status in SessionStatus::ALL {
            let got = pairing_allowed("bot", status);
            if status == QrReady {
                assert_eq!(got, Ok(()));
            } else {
                assert_eq!(
                    WebError::from(got.unwrap_err()),
                    WebError::PairingCodeNotAvailable(format!(
                        "Session 'bot' is {status}: a pairing code is only available while it waits for a link (qr_ready)"
                    ))
                );
            }
        }
    }
}
