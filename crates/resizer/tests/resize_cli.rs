//! `resizer resize`: the pipeline on local files, one file or a folder, through the real binary.

mod common;

use std::process::Command;

use common::{png, write, TempDir, BIN};

#[test]
fn one_file_takes_its_format_from_the_output_name() {
    let dir = TempDir::new();
    let input = dir.0.join("in.png");
    write(&input, &png(120, 80));
    let output = dir.0.join("out.jpg");
    let run = Command::new(BIN).arg("resize").arg(&input).arg("-o").arg(&output).args(["--width", "60"]).output();
    let run = run.expect("run resizer resize");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let probe = imaging::probe(&std::fs::read(&output).expect("output")).expect("an image");
    assert_eq!((probe.format.as_str(), probe.width, probe.height), ("jpeg", 60, 40));

    // A name whose format we do not write is refused, not filled with JPEG bytes.
    let bmp = dir.0.join("out.bmp");
    let run = Command::new(BIN).arg("resize").arg(&input).arg("-o").arg(&bmp).args(["--width", "60"]).output();
    let run = run.expect("run resizer resize");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(".bmp") && stderr.contains("--format"), "{stderr}");
    assert!(!bmp.exists());
    // With --format it is the caller's choice.
    let run = Command::new(BIN)
        .arg("resize")
        .arg(&input)
        .arg("-o")
        .arg(&bmp)
        .args(["--width", "60", "--format", "png"])
        .output();
    assert!(run.expect("run").status.success());
    // `.gif` names GIF, which is written.
    let gif = dir.0.join("out.gif");
    let run = Command::new(BIN).arg("resize").arg(&input).arg("-o").arg(&gif).args(["--width", "60"]).output();
    assert!(run.expect("run").status.success());
    let probe = imaging::probe(&std::fs::read(&gif).expect("output")).expect("an image");
    assert_eq!((probe.format.as_str(), probe.width, probe.height), ("gif", 60, 40));
}

#[test]
fn a_folder_is_resized_and_a_bad_file_makes_exit_1() {
    let dir = TempDir::new();
    let (photos, out) = (dir.0.join("photos"), dir.0.join("out"));
    std::fs::create_dir_all(&photos).expect("dir");
    write(&photos.join("a.png"), &png(100, 50));
    write(&photos.join("b.png"), &png(50, 100));
    write(&photos.join("broken.png"), b"not an image");
    let run = Command::new(BIN)
        .args(["resize", "--batch"])
        .arg(&photos)
        .arg("--out")
        .arg(&out)
        .args(["--width", "20", "--format", "webp", "--threads", "2"])
        .output()
        .expect("run resizer resize --batch");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stdout}{stderr}");
    assert!(format!("{stdout}{stderr}").contains("images/s"), "{stdout}{stderr}");
    for (name, width, height) in [("a.webp", 20, 10), ("b.webp", 20, 40)] {
        let probe = imaging::probe(&std::fs::read(out.join(name)).expect("output")).expect("an image");
        assert_eq!((probe.width, probe.height), (width, height), "{name}");
    }
    assert!(stderr.contains("broken.png"), "{stderr}");
}
