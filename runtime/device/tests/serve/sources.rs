//! The request sources beside stdin: Unix socket clients, a watched directory, and the
//! checks of GPIO button specifications.

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Serve, case, f32_bytes, sample, serve_to_end, status};

#[test]
fn socket_clients_watched_files_and_button_specs() {
    use std::os::unix::net::UnixStream;
    let (dir, model, state, mut rng) = case("socket", 4, 8);
    let sock = dir.join("edgetune.sock");
    let watched = dir.join("incoming");
    std::fs::create_dir_all(&watched).unwrap();
    // A file present at start is not new: it is not predicted.
    std::fs::write(watched.join("old.f32"), [0u8; 16]).unwrap();
    let mut s = Serve::start(
        &model,
        &state,
        &[
            "--socket",
            sock.to_str().unwrap(),
            "--watch",
            watched.to_str().unwrap(),
            "--watch-interval",
            "0.05",
            "--persist-interval",
            "60",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Two clients at once, each gets its own answers.
    let mut clients: Vec<(UnixStream, BufReader<UnixStream>)> = (0..2)
        .map(|_| {
            let c = UnixStream::connect(&sock).unwrap();
            let r = BufReader::new(c.try_clone().unwrap());
            (c, r)
        })
        .collect();
    for (k, (c, r)) in clients.iter_mut().enumerate() {
        writeln!(
            c,
            "{}",
            json!({ "tensor": sample(k, &mut rng), "id": format!("client {k}") })
        )
        .unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let a: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(a["id"], format!("client {k}"));
        assert_eq!(a["class"], ["a", "b"][k], "{a}");
        writeln!(c, "{}", json!({ "label": "c", "sample": a["sample"] })).unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"result\":\"learned\""), "{line}");
        writeln!(c, "oops").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("malformed JSON"), "{line}");
    }
    // A new file in the watched directory, written under a temporary name and renamed
    // (a half-written file is never read): its prediction comes on stdout.
    let x = f32_bytes(&sample(1, &mut rng));
    std::fs::write(watched.join("new.f32.tmp"), &x).unwrap();
    std::fs::rename(watched.join("new.f32.tmp"), watched.join("new.f32")).unwrap();
    let a = s.answer().unwrap();
    assert_eq!(a["input"], json!(watched.join("new.f32")), "{a}");
    assert_eq!(a["class"], "b", "{a}");
    // stdin still works beside them.
    assert!(s.predict(&sample(0, &mut rng))["sample"].is_u64());
    // With a socket, the end of stdin does not end the service; SIGTERM does, after
    // writing the labels that waited for the persist interval.
    s.terminate();
    assert!(!sock.exists(), "the socket file is removed on exit");
    assert_eq!(status(&state)["labels"], 2);

    // Button specifications: wrong ones and missing chips are clear errors.
    for (spec, expected) in [
        ("gpiochip0-17=cat", "expected CHIP:LINE=CLASS"),
        ("gpiochip0:x=cat", "expected CHIP:LINE=CLASS"),
        ("gpiochip0:17=", "expected CHIP:LINE=CLASS"),
        ("gpiochip99:17=cat", "cannot open /dev/gpiochip99"),
    ] {
        let (ok, _, err) = serve_to_end(&model, &state, &["--button", spec]);
        assert!(!ok && err.contains(expected), "{spec}: {err}");
    }
}
