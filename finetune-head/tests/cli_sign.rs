//! `finetune-head keygen` and `sign` through the command line: the files and their
//! modes, what is refused (an existing key, a private key others can read, something
//! that is not a bundle) and that each refusal says why on stderr.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use edgetune::bundle::{Bundle, Provenance};
use edgetune::trust;

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_finetune-head"))
        .args(args)
        .output()
        .expect("running finetune-head")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn keygen_then_sign() {
    let dir = edgetune_testkit::scratch("cli-sign");
    let key = dir.join("signing.key");
    let key_s = key.to_str().unwrap();
    let model = dir.join("model.etb");
    let model_s = model.to_str().unwrap();
    Bundle::features_only(3, ["a", "b"], Provenance::new("test", "test"))
        .write(&model)
        .unwrap();

    let o = cli(&["keygen", "--out", key_s]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mode(&key), 0o600);
    let public = dir.join("signing.key.pub");
    let trusted = [trust::read_public_key(&public).unwrap()];
    let id = trusted[0].id().to_string();
    assert!(text(&o).contains(&id), "{}", text(&o));
    // Again: refused, the key is kept.
    let before = std::fs::read(&key).unwrap();
    let o = cli(&["keygen", "--out", key_s]);
    assert!(
        !o.status.success() && text(&o).contains("exists"),
        "{}",
        text(&o)
    );
    assert_eq!(std::fs::read(&key).unwrap(), before);

    let o = cli(&["sign", model_s, "--key", key_s]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&id) && text(&o).contains("model.etb.sig"));
    assert_eq!(
        Bundle::read_trusted(&model, &trusted).unwrap().1,
        trusted[0].id()
    );

    // A private key readable by others is refused, and nothing is signed.
    std::fs::remove_file(trust::signature_path(&model)).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = cli(&["sign", model_s, "--key", key_s]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("chmod 600"), "{}", text(&o));
    assert!(!trust::signature_path(&model).exists());

    // Not a bundle; the public key instead of the private one.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = cli(&["sign", key_s, "--key", key_s]);
    assert!(!o.status.success() && text(&o).contains("not a valid bundle"));
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = cli(&["sign", model_s, "--key", public.to_str().unwrap()]);
    assert!(!o.status.success() && text(&o).contains("this is a public key"));
}
