//! Files: written atomically, read errors that name the path, provenance.

use super::*;

#[test]
fn write_replaces_atomically_and_leaves_no_temporary_files() {
    let dir = edgetune_testkit::scratch("bundle-write");
    let path = dir.join("model.etb");
    let first = features_bundle();
    first.write(&path).unwrap();
    assert_eq!(Bundle::read(&path).unwrap(), first);
    let second = image_bundle();
    second.write(&path).unwrap();
    assert_eq!(Bundle::read(&path).unwrap(), second);
    assert_eq!(fs::read(&path).unwrap(), second.to_bytes().unwrap());
    assert_eq!(dir_entries(&dir), ["model.etb"]);

    // An invalid bundle is not written and the old one stays.
    let mut bad = features_bundle();
    bad.manifest.embedding.size = 0;
    assert!(matches!(
        bad.write(&path),
        Err(BundleError::Manifest { .. })
    ));
    assert_eq!(Bundle::read(&path).unwrap(), second);

    // A failed rename (the target is a directory) removes the temporary file.
    let sub = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join("keep"), b"x").unwrap();
    let err = first.write(&sub).unwrap_err();
    assert!(matches!(err, BundleError::Io { .. }), "{err}");
    assert!(err.to_string().contains("sub"), "{err}");
    assert_eq!(dir_entries(&dir), ["model.etb", "sub"]);

    // A missing directory: an error naming the temporary file's place, no panic.
    let err = first.write(dir.join("missing/model.etb")).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    // A path that names no file.
    let err = first.write("").unwrap_err();
    assert!(matches!(err, BundleError::Io { .. }), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn read_errors_name_the_path() {
    let dir = edgetune_testkit::scratch("bundle-read");
    let missing = dir.join("no-such.etb");
    let err = Bundle::read(&missing).unwrap_err();
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
    let BundleError::Io { source, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(err.source().is_some());

    let path = dir.join("corrupt.etb");
    let mut bytes = features_bundle().to_bytes().unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let err = Bundle::read(&path).unwrap_err();
    let msg = chain(&err);
    assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
    assert!(msg.contains("checksum mismatch"), "{msg}");
    assert!(matches!(err.inner(), BundleError::Checksum { .. }), "{msg}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn provenance_new_is_now() {
    let p = Provenance::new("model.onnx", "finetune-head 0.1.0");
    assert!(p.created_unix > 1_700_000_000);
    assert_eq!((p.source_sha256, p.notes.len()), (None, 0));
    assert_eq!(Preprocess::default().scale, 1.0);
}
