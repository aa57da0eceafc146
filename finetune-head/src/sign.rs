//! `finetune-head keygen` and `finetune-head sign`: a signing key pair, and a bundle's
//! detached Ed25519 signature (`BUNDLE.sig`) that devices check with
//! `edgetune serve --trust KEY.pub`. The signing and the key files are
//! [`edgetune::trust`]'s; this is the host's side of them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgetune::bundle::Bundle;
use edgetune::trust::{self, KeyId, SecretKey};

/// Writes a new private key to `out` (mode 0600) and its public key to `out.pub`;
/// returns the public key's path and id. Existing files are never overwritten.
pub fn keygen(out: &Path) -> Result<(PathBuf, KeyId)> {
    let key = SecretKey::generate()?;
    let public = trust::write_keypair(out, &key)?;
    Ok((public, key.public().id()))
}

/// Signs the bundle at `bundle` with the private key in `key`; returns the signature
/// file's path and the key's id. The file must be a valid bundle: a device would refuse
/// anything else whatever its signature.
pub fn sign(bundle: &Path, key: &Path) -> Result<(PathBuf, KeyId)> {
    let key = trust::read_secret_key(key)?;
    let bytes =
        std::fs::read(bundle).with_context(|| format!("cannot read {}", bundle.display()))?;
    Bundle::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid bundle; not signed", bundle.display()))?;
    let sig = trust::sign_file(bundle, &bytes, &key)?;
    Ok((sig, key.public().id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgetune::bundle::Provenance;
    use edgetune::trust::TrustError;

    #[test]
    fn keygen_sign_and_read_trusted() {
        let dir = edgetune_testkit::scratch("sign");
        let model = dir.join("model.etb");
        Bundle::features_only(3, ["a"], Provenance::new("test", "test"))
            .write(&model)
            .unwrap();
        let key = dir.join("signing.key");
        let (public, id) = keygen(&key).unwrap();
        let (sig, signer) = sign(&model, &key).unwrap();
        assert_eq!((signer, sig.clone()), (id, trust::signature_path(&model)));
        let trusted = [trust::read_public_key(&public).unwrap()];
        let (bundle, signer) = Bundle::read_trusted(&model, &trusted).unwrap();
        assert_eq!(
            (bundle.manifest.classes, signer),
            (vec!["a".to_string()], id)
        );

        // Written again (as `train` does): the old signature goes with the old bytes.
        Bundle::features_only(3, ["b"], Provenance::new("test", "test"))
            .write(&model)
            .unwrap();
        assert!(!sig.exists());
        let err = Bundle::read_trusted(&model, &trusted).unwrap_err();
        let edgetune::bundle::BundleError::Refused { error, .. } = err else {
            panic!("{err}")
        };
        assert!(matches!(error, TrustError::Unsigned { .. }), "{error}");

        // Something that is not a bundle is not signed.
        let junk = dir.join("junk.etb");
        std::fs::write(&junk, b"not a bundle").unwrap();
        let err = format!("{:#}", sign(&junk, &key).unwrap_err());
        assert!(err.contains("not a valid bundle"), "{err}");
        assert!(!trust::signature_path(&junk).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
