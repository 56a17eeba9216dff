//! The first frame: `Hello` → who is this? The user comes from the JWT only.

use filesync_core::db::devices;
use filesync_core::jwt::{Grant, JwtError};
use filesync_core::proto::frame::FrameError;
use filesync_core::proto::{ErrorCode, Message, PROTOCOL_VERSION};
use filesync_core::UserId;
use futures::StreamExt;

use crate::conn::Reader;
use crate::error::ReqError;
use crate::node::Shared;

/// Longest device id (it is stored in `file_versions.device_id`).
pub const MAX_DEVICE_ID_BYTES: usize = 64;
/// Longest device name.
pub const MAX_DEVICE_NAME_BYTES: usize = 64;

/// Who is on the other end.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: UserId,
    pub username: String,
    pub device_id: String,
    pub device_name: String,
    /// The token's generation and login device: a revocation that names them closes the connection.
    pub grant: Grant,
}

/// Maps a frame-level failure to the error frame that answers it.
pub fn frame_error(e: &FrameError) -> Option<ReqError> {
    match e {
        FrameError::TooLarge { len, max } => Some(ReqError::new(
            ErrorCode::FrameTooLarge,
            format!("frame of {len} bytes exceeds the maximum of {max} bytes"),
        )),
        FrameError::Malformed(m) => Some(ReqError::new(ErrorCode::BadFrame, format!("malformed frame: {m}"))),
        FrameError::Incomplete | FrameError::Io(_) => None,
    }
}

/// Reads and checks `Hello`, which must arrive by `deadline`. `Err(None)`: the peer left without a word.
pub async fn handshake(
    shared: &Shared,
    reader: &mut Reader,
    deadline: tokio::time::Instant,
) -> Result<Identity, Option<ReqError>> {
    let first = match tokio::time::timeout_at(deadline, reader.next()).await {
        Err(_) => {
            return Err(Some(ReqError::new(
                ErrorCode::HandshakeTimeout,
                format!("no Hello within {} seconds", shared.tuning.handshake_timeout.as_secs()),
            )))
        }
        Ok(None) => return Err(None),
        Ok(Some(Err(e))) => return Err(frame_error(&e)),
        Ok(Some(Ok(m))) => m,
    };
    let Message::Hello { protocol_version, token, device_id, device_name } = first else {
        return Err(Some(ReqError::new(
            ErrorCode::HelloRequired,
            format!("the first frame must be Hello, not {}", first.kind()),
        )));
    };
    if protocol_version != PROTOCOL_VERSION {
        return Err(Some(ReqError::new(
            ErrorCode::VersionMismatch,
            format!("this node speaks protocol version {PROTOCOL_VERSION}, not {protocol_version}"),
        )));
    }
    check_device_field("device_id", &device_id, MAX_DEVICE_ID_BYTES)?;
    check_device_field("device_name", &device_name, MAX_DEVICE_NAME_BYTES)?;
    let info = shared.jwt.verify(&token).map_err(|e| {
        Some(match e {
            JwtError::Expired => ReqError::new(ErrorCode::TokenExpired, "the token has expired; log in again"),
            _ => ReqError::new(ErrorCode::Unauthorized, "the token is not valid"),
        })
    })?;
    let (user, grant) = (info.user_id, info.grant);
    // One query: the user exists, the token's generation is current and its device not revoked.
    let username = shared
        .db
        .run(move |c| devices::check(c, user, grant.generation, grant.device))
        .await
        .map_err(|e| Some(e.into()))?;
    let Some(username) = username else {
        return Err(Some(ReqError::new(
            ErrorCode::TokenRevoked,
            "the token was revoked (logged out, device removed, password changed or account deleted); log in again",
        )));
    };
    Ok(Identity { user, username, device_id, device_name, grant })
}

fn check_device_field(name: &str, value: &str, max: usize) -> Result<(), Option<ReqError>> {
    if value.is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(Some(ReqError::bad_request(format!("{name} must be 1 to {max} bytes of printable text"))));
    }
    Ok(())
}
