//! Signing, checking, the signature file's format and key files.

use edgetune_testkit::scratch;
use std::fs;

use super::*;

#[test]
fn roundtrip_and_every_flipped_bit_is_tampering() {
    let key = SecretKey::generate().unwrap();
    let data: Vec<u8> = (0..64u8).collect();
    let sig = sign(&data, &key);
    let trusted = [key.public()];
    assert_eq!(verify(&data, &sig, &trusted).unwrap(), key.public().id());
    for i in 0..data.len() {
        let mut bad = data.clone();
        bad[i] ^= 1 << (i % 8);
        let err = verify(&bad, &sig, &trusted).unwrap_err();
        assert!(matches!(err, TrustError::Tampered { .. }), "{err}");
    }
    // A changed signature byte is tampering too, as long as it still parses.
    let mut bytes = sig.to_bytes();
    bytes[40] ^= 1;
    if let Ok(bad) = Signature::from_bytes(&bytes) {
        assert!(matches!(
            verify(&data, &bad, &trusted),
            Err(TrustError::Tampered { .. })
        ));
    }
}

#[test]
fn a_key_not_trusted_is_named() {
    let (a, b) = (
        SecretKey::generate().unwrap(),
        SecretKey::generate().unwrap(),
    );
    let sig = sign(b"x", &b);
    let err = verify(b"x", &sig, &[a.public()]).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("untrusted"), "{text}");
    assert!(text.contains(&b.public().id().to_string()), "{text}");
    assert!(text.contains(&a.public().id().to_string()), "{text}");
    // Trusting both: accepted, and the signer named.
    assert_eq!(
        verify(b"x", &sig, &[a.public(), b.public()]).unwrap(),
        b.public().id()
    );
    // Trusting nobody refuses everything.
    assert!(matches!(
        verify(b"x", &sig, &[]),
        Err(TrustError::Untrusted { .. })
    ));
}

#[test]
fn signature_text_is_strict() {
    let key = SecretKey::generate().unwrap();
    let sig = sign(b"data", &key);
    let text = sig.to_text();
    assert_eq!(Signature::from_text(&text).unwrap(), sig);
    assert_eq!(Signature::from_bytes(&sig.to_bytes()).unwrap(), sig);
    for (bad, says) in [
        (String::new(), "does not start"),
        (text.replacen("key:", "kee:", 1), "expected a line `key"),
        (text.replacen("ed25519: ", "ed25519: !", 1), "not base64"),
        (format!("{text}more\n"), "unexpected line"),
        (
            text.lines().take(2).collect::<Vec<_>>().join("\n"),
            "expected a line `ed25519",
        ),
    ] {
        let err = Signature::from_text(&bad).unwrap_err().to_string();
        assert!(err.contains(says), "{err} lacks {says}");
    }
    assert!(Signature::from_bytes(&[0; 10]).is_err());
}

#[test]
fn key_files_roundtrip_and_refuse_what_they_must() {
    let dir = scratch("trust-keys");
    let path = dir.join("fleet.key");
    let key = SecretKey::generate().unwrap();
    let pub_path = write_keypair(&path, &key).unwrap();
    assert_eq!(pub_path, dir.join("fleet.key.pub"));
    assert_eq!(read_public_key(&pub_path).unwrap(), key.public());
    let back = read_secret_key(&path).unwrap();
    assert_eq!(back.public(), key.public());
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    assert!(
        fs::read_to_string(&pub_path)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );

    // Never over an existing key.
    let err = write_keypair(&path, &SecretKey::generate().unwrap()).unwrap_err();
    assert!(matches!(err, TrustError::KeyExists { .. }), "{err}");
    assert_eq!(read_secret_key(&path).unwrap().public(), key.public());

    // The two kinds of file mixed up: said so.
    let err = read_public_key(&path).unwrap_err().to_string();
    assert!(err.contains("this is a private key"), "{err}");
    let err = read_secret_key(&pub_path);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The .pub file is 0644 (less the umask): refused for its mode first.
        assert!(err.is_err());
        fs::set_permissions(&pub_path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_secret_key(&pub_path).unwrap_err().to_string();
        assert!(err.contains("this is a public key"), "{err}");

        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_key(&path).unwrap_err();
        assert!(matches!(err, TrustError::KeyPermissions { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("mode 0644") && text.contains("chmod 600"),
            "{text}"
        );
    }
    #[cfg(not(unix))]
    let _ = err;

    // Not a key at all.
    let junk = dir.join("junk.pub");
    fs::write(&junk, "hello\n").unwrap();
    let err = read_public_key(&junk).unwrap_err().to_string();
    assert!(err.contains("not an Ed25519 public key"), "{err}");
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn detached_signatures() {
    let dir = scratch("trust-detached");
    let file = dir.join("model.etb");
    let bytes = b"bundle bytes".to_vec();
    fs::write(&file, &bytes).unwrap();
    let key = SecretKey::generate().unwrap();
    let trusted = [key.public()];
    let err = verify_detached(&file, &bytes, &trusted).unwrap_err();
    assert!(matches!(err, TrustError::Unsigned { .. }), "{err}");
    assert!(err.to_string().contains("model.etb.sig"), "{err}");

    let sig_path = sign_file(&file, &bytes, &key).unwrap();
    assert_eq!(sig_path, signature_path(&file));
    assert_eq!(
        verify_detached(&file, &bytes, &trusted).unwrap(),
        key.public().id()
    );

    fs::write(&sig_path, "garbage").unwrap();
    let err = verify_detached(&file, &bytes, &trusted).unwrap_err();
    assert!(matches!(err, TrustError::InFile { .. }), "{err}");
    fs::write(&sig_path, vec![b'x'; 10_000]).unwrap();
    assert!(verify_detached(&file, &bytes, &trusted).is_err());
    let _ = fs::remove_dir_all(&dir);
}

/// Key files as OpenSSL writes and reads them (skipped, saying so, without `openssl`).
#[test]
fn key_files_are_openssls() {
    use std::process::Command;
    let openssl = |args: &[&str]| Command::new("openssl").args(args).output();
    if !openssl(&["version"]).is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: no openssl on PATH");
        return;
    }
    let dir = scratch("trust-openssl");
    // Theirs, read by us.
    let theirs = dir.join("theirs.pem");
    let t = theirs.to_str().unwrap();
    let o = openssl(&["genpkey", "-algorithm", "ed25519", "-out", t]).unwrap();
    assert!(o.status.success(), "{o:?}");
    let theirs_pub = dir.join("theirs.pem.pub");
    let o = openssl(&[
        "pkey",
        "-in",
        t,
        "-pubout",
        "-out",
        theirs_pub.to_str().unwrap(),
    ]);
    assert!(o.unwrap().status.success());
    #[cfg(unix)]
    fs::set_permissions(&theirs, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let key = read_secret_key(&theirs).unwrap();
    assert_eq!(read_public_key(&theirs_pub).unwrap(), key.public());
    // Ours, read by them: the public key OpenSSL derives is the one we wrote.
    let ours = dir.join("ours.key");
    let ours_pub = write_keypair(&ours, &SecretKey::generate().unwrap()).unwrap();
    let o = openssl(&["pkey", "-in", ours.to_str().unwrap(), "-pubout"]).unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, fs::read(&ours_pub).unwrap());
    let _ = fs::remove_dir_all(&dir);
}
