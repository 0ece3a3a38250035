//! The Unix socket listener: `.sessionlet/api.sock`, mode 0600, in the
//! control folder the controller already checked is private. A connection
//! from another uid (other than root) is closed before it is read.

use std::convert::Infallible;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::Request;

use super::auth::Transport;
use super::Hub;

/// Binds the API socket in `control_dir` and serves it until the runtime
/// ends. The caller holds the control folder's lock, so a socket already
/// there is a dead controller's.
pub fn serve_unix(control_dir: &Path, hub: Arc<Hub>) -> std::io::Result<PathBuf> {
    let path = super::socket_path(control_dir);
    let me = nix::unistd::geteuid().as_raw();
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() && m.uid() == me => std::fs::remove_file(&path)?,
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} exists and is not our socket; remove it and start again",
                path.display()
            )))
        }
        Err(_) => {}
    }
    let listener = {
        // Nobody else may connect, whatever the folder's mode; the umask
        // closes the window between bind and chmod.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let l = tokio::net::UnixListener::bind(&path);
        nix::sys::stat::umask(old);
        l?
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors, most likely: give the open ones time to end
                // rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            // SO_PEERCRED: our own user, or root, who could read our files anyway.
            let allowed = stream
                .peer_cred()
                .is_ok_and(|c| c.uid() == me || c.uid() == 0);
            if !allowed {
                tracing::warn!("refused a connection to the API socket from another user");
                continue;
            }
            let hub = hub.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let hub = hub.clone();
                        async move {
                            Ok::<_, Infallible>(
                                super::routes::handle(req, hub, Transport::Unix).await,
                            )
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(path)
}
