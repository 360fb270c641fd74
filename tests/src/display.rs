//! A virtual X display (Xvfb) for tests of the native window, with screenshots: Xvfb
//! keeps its screen in an XWD file (`-fbdir`), which is read and saved as a PNG.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// Whether Xvfb and the WebKitGTK runtime are here. With `CI=true` they must be (the test
/// command installs them): a missing one fails the run instead of skipping.
pub fn available() -> bool {
    let xvfb = Path::new("/usr/bin/Xvfb").exists();
    let webkit = Command::new("pkg-config").args(["--exists", "webkit2gtk-4.1"]).status().is_ok_and(|s| s.success());
    let found = xvfb && webkit;
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Xvfb or WebKitGTK is missing in CI: `cargo xtask test` installs them"
        );
        eprintln!("SKIPPED on this machine: Xvfb or WebKitGTK is not installed (CI installs them)");
    }
    found
}

/// A running Xvfb.
#[derive(Debug)]
pub struct Display {
    child: Child,
    /// Its name, for `DISPLAY` (for example `:93`).
    pub name: String,
    fbdir: tempfile::TempDir,
}

impl Display {
    /// Starts Xvfb on the first free display number from 90, 1280x1024, 24 bits.
    pub fn start() -> anyhow::Result<Display> {
        // Tests start displays in parallel: a number another Xvfb took first makes ours
        // exit at once, and the next number is tried.
        'numbers: for number in 90..140 {
            let (socket, lock) = (format!("/tmp/.X11-unix/X{number}"), format!("/tmp/.X{number}-lock"));
            if stale_lock(Path::new(&lock)) {
                // Its server is gone (killed before it could clean up): the number is free.
                let _ = std::fs::remove_file(&socket);
                let _ = std::fs::remove_file(&lock);
            }
            if Path::new(&socket).exists() || Path::new(&lock).exists() {
                continue;
            }
            let name = format!(":{number}");
            let fbdir = tempfile::tempdir()?;
            let child = Command::new("Xvfb")
                .args([name.as_str(), "-screen", "0", "1280x1024x24", "-nolisten", "tcp", "-fbdir"])
                .arg(fbdir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting Xvfb")?;
            let mut display = Display { child, name, fbdir };
            let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
            let deadline = Instant::now() + Duration::from_secs(10);
            // The socket and the screen file appear with the server.
            while !socket.exists() || !display.fbdir.path().join("Xvfb_screen0").exists() {
                if let Ok(Some(_)) = display.child.try_wait() {
                    continue 'numbers;
                }
                ensure!(Instant::now() < deadline, "Xvfb did not start on {number}");
                std::thread::sleep(Duration::from_millis(20));
            }
            display.name = format!(":{number}");
            return Ok(display);
        }
        bail!("no free X display number")
    }

    /// Saves the screen as a PNG at `path`; returns (width, height, distinct colours).
    pub fn screenshot(&self, path: &Path) -> anyhow::Result<(u32, u32, usize)> {
        let xwd = std::fs::read(self.fbdir.path().join("Xvfb_screen0"))?;
        let field = |i: usize| -> anyhow::Result<u32> {
            let bytes = xwd.get(i * 4..i * 4 + 4).context("truncated XWD header")?;
            Ok(u32::from_be_bytes(bytes.try_into()?))
        };
        let (header_size, width, height) = (field(0)? as usize, field(4)?, field(5)?);
        let (byte_order, bits_per_pixel, bytes_per_line, ncolors) =
            (field(7)?, field(11)?, field(12)? as usize, field(19)?);
        let (red_mask, green_mask, blue_mask) = (field(14)?, field(15)?, field(16)?);
        ensure!(bits_per_pixel == 32, "expected a 32-bit screen, got {bits_per_pixel}");
        let data = header_size + ncolors as usize * 12;
        let mut rgb = Vec::with_capacity((width * height * 3) as usize);
        let mut colours = std::collections::HashSet::new();
        let channel = |pixel: u32, mask: u32| ((pixel & mask) >> mask.trailing_zeros()) as u8;
        for y in 0..height as usize {
            for x in 0..width as usize {
                let at = data + y * bytes_per_line + x * 4;
                let bytes: [u8; 4] = xwd.get(at..at + 4).context("truncated XWD pixels")?.try_into()?;
                let pixel = if byte_order == 0 { u32::from_le_bytes(bytes) } else { u32::from_be_bytes(bytes) };
                let px = [channel(pixel, red_mask), channel(pixel, green_mask), channel(pixel, blue_mask)];
                colours.insert(px);
                rgb.extend_from_slice(&px);
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut encoder = png::Encoder::new(file, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header()?.write_image_data(&rgb)?;
        Ok((width, height, colours.len()))
    }
}

/// Whether an X lock file names a process that no longer runs.
fn stale_lock(lock: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(lock) else { return false };
    text.trim().parse::<u32>().is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

impl Drop for Display {
    fn drop(&mut self) {
        // SIGTERM first, so the server removes its lock file and socket.
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
