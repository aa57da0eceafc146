//! The labeling page in a real browser: Debian's headless `chromium` (scripts/setup.sh
//! installs it), driven over the DevTools protocol. `edgetune serve --watch DIR --http`
//! runs on the shipped digits CNN (its own classifier kept as the head); the test signs
//! in with the token through the login form, drops digit images into the watched
//! folder and sees each prediction and image appear on the page (live events), taps a
//! class button and sees the page's label count go up, uploads a photo through the
//! page's file field and sees its prediction, labels it wrongly and rolls that back
//! through the page's Undo section (the count goes down again), adds a new class
//! through the field, and checks through `/api/status` and the state on disk that the
//! labels kept were learned and written. A screenshot is decoded and must not be blank.
//! The page's size, its time to first paint and how long each step took are printed
//! (`--nocapture`), not asserted.
//!
//! Every wait is bounded: the test stops by itself. Without chromium it is skipped with
//! a loud message (shown without `--nocapture` too), except in CI (`CI` set, and not
//! `false` or `0`), where a missing browser is a failure.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgetune::bundle::Preprocess;
use edgetune_testkit as testkit;
use finetune_head::data::read_csv;
use headless_chrome::protocol::cdp::Input::InsertText;
use headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption;
use headless_chrome::{Browser, LaunchOptions, Tab};
use image::GrayImage;
use serde_json::Value;

/// Longest wait for anything the page or the service should do.
const WAIT: Duration = Duration::from_secs(30);
const DIGITS: [&str; 5] = ["zero", "one", "two", "three", "four"];

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The chromium program: `$CHROMIUM`, else the first of the usual names on `PATH`.
fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// A running `edgetune serve`, killed if the test fails before it stops it.
struct Serve {
    child: Child,
    addr: SocketAddr,
    token: String,
}

impl Serve {
    fn start(bundle: &Path, state: &Path, watched: &Path) -> Serve {
        let mut cmd = Command::new(testkit::edgetune());
        cmd.arg("serve")
            .arg(bundle)
            .arg("--state")
            .arg(state)
            .arg("--watch")
            .arg(watched)
            .args(["--watch-interval", "0.05", "--persist-interval", "0.2"])
            .args(["--no-stdin", "--http", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let (child, addr, token) = testkit::http::serve(cmd, state)
            .unwrap_or_else(|log| panic!("serve stopped before listening: {log}"));
        Serve { child, addr, token }
    }

    /// `method path` with the token; the status and the body.
    fn ask(&self, method: &str, path: &str) -> (u16, String) {
        let auth = format!("Bearer {}", self.token);
        testkit::http::request(self.addr, method, path, &[("Authorization", &auth)], b"")
    }

    fn json(&self, method: &str, path: &str) -> Value {
        let (code, body) = self.ask(method, path);
        assert_eq!(code, 200, "{method} {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Stops it with SIGTERM (it writes what waits) and waits for a clean exit.
    fn stop(mut self) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "serve exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of a JavaScript expression, through JSON; `None` when it throws (the page
/// is still loading).
fn js(tab: &Tab, expression: &str) -> Option<Value> {
    let text = tab
        .evaluate(&format!("JSON.stringify({expression})"), false)
        .unwrap_or_else(|e| panic!("{expression}: {e}"))
        .value?;
    serde_json::from_str(text.as_str()?).ok()
}

/// Waits until `done` holds for what the page shows (`expression`); that value. A
/// timeout names the page the browser is on and its text: `None` from `js` means an
/// element is missing, most often because the browser shows another page (the login
/// form, or its own error page when the server did not answer).
fn wait_for(tab: &Tab, what: &str, expression: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = js(tab, expression);
        if let Some(v) = v.as_ref().filter(|v| done(v)) {
            return v.clone();
        }
        if Instant::now() >= deadline {
            let on = js(
                tab,
                "[location.href, document.body ? document.body.innerText.slice(0, 2000) : null]",
            );
            panic!("the page never showed {what}: {v:?}\nthe browser is on [url, text]: {on:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the page shows of its current input.
const SHOWN: &str = "(() => { \
     const $ = (id) => document.getElementById(id); \
     return { details: $('details').textContent, guess: $('guess').textContent, \
     src: $('frame').getAttribute('src'), loaded: $('frame').naturalWidth, \
     bars: document.querySelectorAll('#bars .bar').length, msg: $('msg').textContent, \
     classes: [...document.querySelectorAll('#classes button')].map((b) => b.textContent), \
     labels: (() => { const kv = [...$('summary').children]; \
       const i = kv.findIndex((e) => e.textContent === 'labels'); \
       return i < 0 ? null : kv[i + 1].textContent; })(), \
     per_class: Object.fromEntries([...$('perclass').rows].map((r) => \
       [r.cells[0].textContent, r.cells[1].textContent])) }; \
     })()";

/// The prediction the service made of `sample`, from `/api/live`.
fn prediction_of(serve: &Serve, sample: u64) -> Value {
    let live = serve.json("GET", "/api/live");
    assert_eq!(live["latest"]["sample"], sample, "{live}");
    live["latest"].clone()
}

/// Waits for the page to show `sample`'s prediction as the service made it, image
/// included.
fn shows_prediction(serve: &Serve, tab: &Tab, what: &str, sample: u64) {
    let class = prediction_of(serve, sample)["class"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = wait_for(tab, &format!("the prediction of {what}"), SHOWN, |v| {
        v["details"]
            .as_str()
            .is_some_and(|d| d.starts_with(&format!("sample {sample} ")))
            && v["loaded"].as_u64().is_some_and(|w| w > 0)
    });
    assert_eq!(shown["src"], format!("/api/frame/{sample}"), "{shown}");
    assert!(
        shown["guess"].as_str().unwrap().starts_with(&class),
        "the page shows {} for sample {sample}, the service said {class}",
        shown["guess"]
    );
    assert!(shown["bars"].as_u64().unwrap() >= 2, "{shown}");
}

/// Taps the class button `name` and waits for the page to say it learned the label
/// of `sample` and to count `labels` labels.
fn tap_class(tab: &Tab, name: &str, sample: u64, labels: u32) {
    tab.find_element_by_xpath(&format!("//div[@id='classes']/button[text()='{name}']"))
        .unwrap()
        .click()
        .unwrap();
    let expected = format!("Learned: sample {sample} is a {name}");
    let labels = labels.to_string();
    wait_for(
        tab,
        &format!("the label {name}, {labels} in all"),
        SHOWN,
        |v| v["msg"] == expected.as_str() && v["labels"] == labels.as_str(),
    );
}

/// Writes `img` into the watched folder whole (written beside it, then renamed in);
/// waits for the service's prediction of it and for the page to show it. The sample.
fn drop_image(
    serve: &Serve,
    tab: &Tab,
    dir: &Path,
    watched: &Path,
    name: &str,
    img: &GrayImage,
) -> u64 {
    let before = serve.json("GET", "/api/live")["latest"]["sample"].as_u64();
    let staged = dir.join(name);
    img.save(&staged).unwrap();
    std::fs::rename(&staged, watched.join(name)).unwrap();
    let deadline = Instant::now() + WAIT;
    let latest = loop {
        let live = serve.json("GET", "/api/live");
        let latest = &live["latest"];
        if latest["sample"].is_u64() && latest["sample"].as_u64() != before {
            break latest.clone();
        }
        assert!(Instant::now() < deadline, "no prediction of {name}: {live}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let sample = latest["sample"].as_u64().unwrap();
    shows_prediction(serve, tab, name, sample);
    sample
}

#[test]
fn the_labeling_page_in_headless_chromium() {
    let Some(chrome) = chromium() else {
        let msg = "no chromium on PATH (scripts/setup.sh installs Debian's `chromium`)";
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!ci, "{msg}: the browser test cannot run in CI without it");
        // Straight to stderr: the test harness hides eprintln! of a passing test unless
        // --nocapture, and a skip must never read as a pass.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!! SKIPPED the labeling page's browser test: {msg} !!!!!!!!\n"
        );
        return;
    };
    let dir = testkit::scratch("browser");
    let watched = dir.join("incoming");
    std::fs::create_dir_all(&watched).unwrap();

    // The digits CNN (trained on 0–4) with its own classifier as the head.
    let opts = finetune_head::convert::Options {
        preprocess: Preprocess {
            scale: 1.0 / 255.0,
            ..Preprocess::default()
        },
        keep_head: true,
        class_names: Some(DIGITS.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    };
    let (bundle, _) =
        finetune_head::convert::convert(&models().join("digits-cnn/digits-cnn-0to4.onnx"), &opts)
            .unwrap();
    let model = dir.join("digits.etb");
    bundle.write(&model).unwrap();
    let digits = read_csv(&models().join("digits/digits.csv.gz"), 1.0).unwrap();
    let image_of = |digit: usize| {
        let i = digits.y.iter().position(|&y| y == digit).unwrap();
        let px = digits.x[i]
            .iter()
            .map(|v| (v * 255.0 / 16.0).round() as u8)
            .collect();
        GrayImage::from_raw(8, 8, px).unwrap()
    };

    let state = dir.join("state");
    let t0 = Instant::now();
    let mut steps = Vec::new();
    let mut step = |what: &str| steps.push(format!("{what} {:.1} s", t0.elapsed().as_secs_f64()));
    let serve = Serve::start(&model, &state, &watched);
    let base = format!("http://{}", serve.addr);
    let (code, page) = serve.ask("GET", "/");
    assert_eq!(code, 200);

    // No sandbox (--no-sandbox): Chromium refuses to run as root with one, and CI runs
    // as root; the browser only ever loads this test's own page.
    let browser = Browser::new(LaunchOptions {
        path: Some(chrome.clone()),
        headless: true,
        sandbox: false,
        window_size: Some((1100, 1000)),
        idle_browser_timeout: Duration::from_secs(120),
        ..LaunchOptions::default()
    })
    .unwrap_or_else(|e| panic!("cannot start {}: {e:#}", chrome.display()));
    let tab = browser.new_tab().unwrap();
    tab.set_default_timeout(WAIT);
    step("chromium started");

    // Sign in through the form the page shows without a token.
    tab.navigate_to(&base).unwrap();
    tab.wait_until_navigated().unwrap();
    // Pasted, as a user does a 64-digit token: typed key by key it took 14 s here.
    tab.wait_for_element("input[name=token]")
        .unwrap()
        .click()
        .unwrap();
    tab.call_method(InsertText {
        text: serve.token.clone(),
    })
    .unwrap();
    tab.wait_for_element("button[type=submit]")
        .unwrap()
        .click()
        .unwrap();
    tab.wait_until_navigated().unwrap();
    let shown = wait_for(tab.as_ref(), "its class buttons", SHOWN, |v| {
        v["classes"].as_array().is_some_and(|c| c.len() == 5)
    });
    assert_eq!(shown["classes"], serde_json::json!(DIGITS), "{shown}");
    assert_eq!(shown["labels"], "0", "{shown}");
    step("signed in");
    let paint = js(
        &tab,
        "performance.getEntriesByType('paint').map((e) => [e.name, e.startTime])",
    )
    .expect("paint entries");
    let nav = js(
        &tab,
        "performance.getEntriesByType('navigation').map((e) => [e.domContentLoadedEventEnd, e.transferSize])",
    )
    .expect("the navigation entry");

    // New frames appear on the page as they are predicted.
    let mut samples = Vec::new();
    for digit in [0, 1, 3] {
        let name = format!("digit-{digit}.png");
        samples.push(drop_image(
            &serve,
            &tab,
            &dir,
            &watched,
            &name,
            &image_of(digit),
        ));
    }
    step("three images shown");
    // A tap on a class button labels the newest input, and the page counts it.
    tap_class(&tab, "three", samples[2], 1);
    let kept = serve.json("POST", "/api/flush")["state"].clone();
    assert!(kept.is_u64(), "no state written: {kept}");

    // A photo uploaded through the page's file field is predicted and shown.
    let photo = dir.join("photo-2.png");
    image_of(2).save(&photo).unwrap();
    tab.wait_for_element("#photo")
        .unwrap()
        .set_input_files(&[photo.to_str().unwrap()])
        .unwrap();
    let said = wait_for(&tab, "the upload's answer", SHOWN, |v| {
        v["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("Predicted sample "))
    });
    let uploaded: u64 = said["msg"].as_str().unwrap()["Predicted sample ".len()..]
        .trim_end_matches('.')
        .parse()
        .unwrap_or_else(|_| panic!("{said}"));
    shows_prediction(&serve, &tab, "the uploaded photo", uploaded);
    step("upload shown");

    // A wrong label (a two labeled one), then rolled back through the page to the state
    // written after the first label: the count goes back down, "one" has no label.
    tap_class(&tab, "one", uploaded, 2);
    js(
        &tab,
        "(() => { window.confirm = (m) => { window.asked = m; return true; }; return 1; })()",
    )
    .expect("confirm replaced");
    let choose = format!(
        "(() => {{ const s = document.getElementById('states'); \
         return [...s.options].some((o) => o.value === '{kept}') && (s.value = '{kept}'); }})()"
    );
    let option = js(&tab, &choose).unwrap_or_default();
    assert_eq!(
        option,
        kept.to_string(),
        "the page offers no state {kept} to roll back to"
    );
    tab.wait_for_element("#rollback").unwrap().click().unwrap();
    let rolled = wait_for(&tab, "the rollback", SHOWN, |v| {
        v["msg"]
            .as_str()
            .is_some_and(|m| m.ends_with(&format!(" is now a copy of state {kept}.")))
            && v["labels"] == "1"
    });
    assert_eq!(rolled["per_class"]["one"], "0", "{rolled}");
    assert_eq!(rolled["per_class"]["three"], "1", "{rolled}");
    let asked = js(&tab, "window.asked").unwrap_or_default();
    assert!(
        asked
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("Roll back to state {kept}?"))),
        "the page did not ask before rolling back: {asked}"
    );
    let status = serve.json("GET", "/api/status");
    assert_eq!(status["labels"], 1, "{status}");
    step("rolled back");

    // A digit the head does not know: a new class typed into the field.
    let seven = drop_image(&serve, &tab, &dir, &watched, "digit-7.png", &image_of(7));
    tab.wait_for_element("#newclass")
        .unwrap()
        .type_into("seven")
        .unwrap();
    tab.wait_for_element("#add").unwrap().click().unwrap();
    let expected = format!("Learned: sample {seven} is a seven (new class)");
    let shown = wait_for(&tab, "the new class", SHOWN, |v| {
        v["msg"] == expected.as_str() && v["classes"].as_array().is_some_and(|c| c.len() == 6)
    });
    assert_eq!(shown["classes"][5], "seven", "{shown}");
    assert_eq!(shown["labels"], "2", "{shown}");
    step("new class learned");

    // The service learned both and wrote them.
    let status = serve.json("GET", "/api/status");
    let labels_of = |s: &Value, name: &str| {
        s["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["labels"].clone())
    };
    assert_eq!(status["labels"], 2, "{status}");
    assert_eq!(labels_of(&status, "three"), Some(1.into()), "{status}");
    assert_eq!(labels_of(&status, "seven"), Some(1.into()), "{status}");
    let flushed = serve.json("POST", "/api/flush");
    assert!(flushed.get("error").is_none(), "{flushed}");
    let written = serve.json("GET", "/api/status");
    assert!(
        written["states_on_disk"]
            .as_array()
            .is_some_and(|s| s.contains(&written["state"])),
        "{written}"
    );

    // A screenshot of what a user sees: decoded, and not one colour.
    let png = tab
        .capture_screenshot(CaptureScreenshotFormatOption::Png, None, None, true)
        .unwrap();
    std::fs::write(dir.join("page.png"), &png).unwrap();
    let shot = image::load_from_memory(&png).unwrap().to_rgb8();
    let first = *shot.get_pixel(0, 0);
    let differ = shot.pixels().filter(|p| **p != first).count();
    assert!(
        differ * 10 > shot.pixels().len(),
        "the screenshot ({}) is nearly blank: {differ} pixels differ from the first",
        dir.join("page.png").display()
    );
    let mut colours: Vec<_> = shot.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        colours.len() > 8,
        "{} colours in the screenshot",
        colours.len()
    );

    eprintln!(
        "labeling page: {} bytes; paint entries [name, ms]: {paint}; navigation [DOMContentLoaded ms, transfer bytes]: {nav}; screenshot {}x{}, {} colours",
        page.len(),
        shot.width(),
        shot.height(),
        colours.len()
    );
    drop(tab);
    drop(browser);
    serve.stop();
    step("stopped");
    eprintln!("steps: {}", steps.join(", "));

    // After the stop, the state on disk holds both labels and the new class.
    let out = Command::new(testkit::edgetune())
        .arg("status")
        .arg("--state")
        .arg(&state)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let disk: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(disk["labels"], 2, "{disk}");
    assert_eq!(labels_of(&disk, "seven"), Some(1.into()), "{disk}");
    let _ = std::fs::remove_dir_all(&dir);
}
