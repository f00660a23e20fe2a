//! The mask salt in Secrets Manager, where the built-in Glue job reads it.
//!
//! A Glue job's default arguments are shown to anyone who may call `GetJob` and are copied into
//! every run's record, so the salt is not one of them: `choreo bootstrap` keeps it in the secret
//! named `aws.mask_salt_secret` (default `choreo-mask-salt`, the name the CloudFormation stack gives
//! it too), and the job gets only that name, as `--mask_salt_secret`. The script reads the value
//! with `GetSecretValue`, so the Glue role needs that permission on the secret.

use crate::AwsClients;
use crate::error::{code, port_error};
use choreo_domain::Config;
use choreo_ports::PortError;

/// What [`ensure_mask_salt`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaltSecret {
    /// No salt is configured: no secret is needed, and none is touched.
    NotNeeded,
    Created,
    /// It held another value, now replaced by the configured one (masks change from now on).
    Updated,
    Unchanged,
}

/// Makes the secret `aws.mask_salt_secret` hold `transform.mask_salt`, creating it if missing.
/// Idempotent: a secret that already holds the salt is only read.
pub async fn ensure_mask_salt(
    clients: &AwsClients,
    config: &Config,
) -> Result<SaltSecret, PortError> {
    let salt = config.transform.mask_salt.expose();
    if salt.is_empty() {
        return Ok(SaltSecret::NotNeeded);
    }
    let name = &config.aws.mask_salt_secret;
    let sm = &clients.secrets;
    let created = sm
        .create_secret()
        .name(name)
        .description("Choreo's transform.mask_salt, read by the built-in Glue job")
        .secret_string(salt)
        .send()
        .await;
    match created {
        Ok(_) => {
            choreo_telemetry::events::emit(crate::events::MaskSaltSecretCreated { secret: name });
            return Ok(SaltSecret::Created);
        }
        Err(e) if code(&e) == Some("ResourceExistsException") => {}
        Err(e) => return Err(port_error("create_secret", name, e)),
    }
    let current = sm
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
        .map_err(|e| port_error("get_secret_value", name, e))?;
    if current.secret_string() == Some(salt) {
        return Ok(SaltSecret::Unchanged);
    }
    sm.put_secret_value()
        .secret_id(name)
        .secret_string(salt)
        .send()
        .await
        .map_err(|e| port_error("put_secret_value", name, e))?;
    choreo_telemetry::events::emit(crate::events::MaskSaltSecretUpdated { secret: name });
    Ok(SaltSecret::Updated)
}
