//! The Lambda layer zips built by `make layer` (`dist/lambda-shell-extension-<version>-<arch>.zip`):
//! packaging (the binary and the proxy wrapper, modes, timestamps, static ELF for the right
//! machine, size budget, the wrapper byte for byte, reproducible bytes) and a smoke run of each
//! packaged binary against the fake API, the arm64 one under `qemu-aarch64`, and of the extracted
//! wrapper.
//!
//! The tests that read `dist/` are `#[ignore]`d: `make test` runs them after `make layer` with
//! `cargo test --test layer -- --ignored`. The checkers themselves are tested here without
//! `dist/`, on zips and ELF headers made in the test, so that each check is known to be able to
//! fail.

mod common;

use std::fs;
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use common::*;
use zip::{CompressionMethod, DateTime, ZipArchive};

/// The binary's entry: Lambda extracts layers into /opt and starts every file in
/// /opt/extensions.
const ENTRY: &str = "extensions/lambda-shell-extension";
/// The Runtime API proxy's exec wrapper (`AWS_LAMBDA_EXEC_WRAPPER=/opt/bin/...`); not under
/// extensions/, where Lambda would start it as an extension.
const WRAPPER_ENTRY: &str = "bin/lambda-shell-extension-proxy";
/// Every entry of a layer zip, in order.
const ENTRIES: [&str; 2] = [ENTRY, WRAPPER_ENTRY];
/// Where the wrapper comes from.
const WRAPPER_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/layer/bin/lambda-shell-extension-proxy"
);
/// Regular file, rwxr-xr-x (both entries).
const ENTRY_MODE: u32 = 0o100755;
/// Size budget of the (uncompressed) binary.
const SIZE_BUDGET: u64 = 1280 * 1024;
const VERSION: &str = env!("CARGO_PKG_VERSION");

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Arch {
    X86_64,
    Arm64,
}

impl Arch {
    /// The suffix of the zip's file name.
    fn zip_suffix(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }

    /// ELF `e_machine`: EM_X86_64 / EM_AARCH64.
    fn e_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 62,
            Arch::Arm64 => 183,
        }
    }

    fn triple(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ELF header and program headers, parsed by hand.

#[derive(Debug)]
struct Elf {
    e_type: u16,
    e_machine: u16,
    /// `p_type` of every program header.
    program_headers: Vec<u32>,
}

fn u16_le(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_le(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Parse a 64-bit little-endian ELF file's header and program header table.
fn parse_elf(b: &[u8]) -> Result<Elf, String> {
    const EHDR_SIZE: usize = 64;
    const PHDR_SIZE: usize = 56;
    if b.len() < EHDR_SIZE {
        return Err(format!("too short for an ELF64 header: {} bytes", b.len()));
    }
    if b[..4] != *b"\x7fELF" {
        return Err(format!("no ELF magic: {:02x?}", &b[..4]));
    }
    if b[4] != 2 {
        return Err(format!("EI_CLASS {} is not ELFCLASS64 (2)", b[4]));
    }
    if b[5] != 1 {
        return Err(format!(
            "EI_DATA {} is not ELFDATA2LSB (1, little-endian)",
            b[5]
        ));
    }
    if b[6] != 1 {
        return Err(format!("EI_VERSION {} is not EV_CURRENT (1)", b[6]));
    }
    let e_type = u16_le(b, 16);
    let e_machine = u16_le(b, 18);
    let e_phoff = u64_le(b, 32);
    let e_phentsize = usize::from(u16_le(b, 54));
    let e_phnum = usize::from(u16_le(b, 56));
    if e_phnum == 0 {
        return Err("no program headers (e_phnum = 0)".into());
    }
    if e_phentsize < PHDR_SIZE {
        return Err(format!(
            "e_phentsize {e_phentsize} < {PHDR_SIZE} (size of an ELF64 program header)"
        ));
    }
    let table_end = usize::try_from(e_phoff)
        .ok()
        .and_then(|off| off.checked_add(e_phentsize.checked_mul(e_phnum)?));
    let start = match table_end {
        Some(end) if end <= b.len() => e_phoff as usize,
        _ => {
            return Err(format!(
                "program header table ({e_phnum} x {e_phentsize} bytes at {e_phoff}) goes past \
                 the end of the file ({} bytes)",
                b.len()
            ))
        }
    };
    let program_headers = (0..e_phnum)
        .map(|i| u32_le(b, start + i * e_phentsize))
        .collect();
    Ok(Elf {
        e_type,
        e_machine,
        program_headers,
    })
}

/// Check that `b` is an executable for `arch` that needs no dynamic loader: ELF64 little-endian,
/// the right `e_machine`, ET_EXEC or ET_DYN, at least one PT_LOAD, no PT_INTERP, no PT_DYNAMIC.
fn check_static_elf(b: &[u8], arch: Arch) -> Result<(), String> {
    let elf = parse_elf(b)?;
    let mut problems = vec![];
    if elf.e_machine != arch.e_machine() {
        problems.push(format!(
            "e_machine {} is not {} ({arch:?})",
            elf.e_machine,
            arch.e_machine()
        ));
    }
    if elf.e_type != ET_EXEC && elf.e_type != ET_DYN {
        problems.push(format!(
            "e_type {} is neither ET_EXEC (2) nor ET_DYN (3)",
            elf.e_type
        ));
    }
    if !elf.program_headers.contains(&PT_LOAD) {
        problems.push("no PT_LOAD segment".into());
    }
    if elf.program_headers.contains(&PT_INTERP) {
        problems.push("has PT_INTERP: dynamically linked (needs a dynamic loader)".into());
    }
    if elf.program_headers.contains(&PT_DYNAMIC) {
        problems.push("has PT_DYNAMIC: not a plain static executable".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

// ---------------------------------------------------------------------------------------------
// The layer zip.

/// The repository's wrapper, which the zip must hold byte for byte.
fn wrapper_file() -> Vec<u8> {
    fs::read(WRAPPER_FILE).unwrap_or_else(|e| panic!("{WRAPPER_FILE}: {e}"))
}

/// The attributes every entry shares: made by Unix, mode 0755, deflated, the fixed timestamp.
fn check_entry_attributes(
    entry: &zip::read::ZipFile<'_, Cursor<&[u8]>>,
    problems: &mut Vec<String>,
) {
    let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
    // External attributes: the high 16 bits are the unix st_mode when made on a Unix system.
    let mode = entry.external_attributes() >> 16;
    if entry.system() != zip::System::Unix || mode != ENTRY_MODE {
        problems.push(format!(
            "{name}: unix mode {mode:o} (made by {:?}) is not {ENTRY_MODE:o} (made by Unix)",
            entry.system()
        ));
    }
    if entry.compression() != CompressionMethod::Deflated {
        problems.push(format!(
            "{name}: compression {:?} is not Deflated",
            entry.compression()
        ));
    }
    match entry.last_modified() {
        Some(t)
            if (
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
            ) == (1980, 1, 1, 0, 0, 0) => {}
        other => problems.push(format!(
            "{name}: timestamp {other:?} is not 1980-01-01 00:00:00"
        )),
    }
}

/// Read an entry whole, checking its size against the header.
fn read_entry(
    entry: &mut zip::read::ZipFile<'_, Cursor<&[u8]>>,
    problems: &mut Vec<String>,
) -> Result<Vec<u8>, String> {
    let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
    let size = entry.size();
    let mut data = Vec::new();
    entry
        .read_to_end(&mut data)
        .map_err(|e| format!("cannot extract {name}: {e}"))?;
    if data.len() as u64 != size {
        problems.push(format!(
            "{name}: extracted {} bytes, the header says {size}",
            data.len()
        ));
    }
    Ok(data)
}

/// Check a layer zip against the packaging contract (the binary for `arch`, then the wrapper
/// holding exactly `wrapper`) and return the binary it holds.
fn check_layer_zip(zip: &[u8], arch: Arch, wrapper: &[u8]) -> Result<Vec<u8>, String> {
    let mut archive =
        ZipArchive::new(Cursor::new(zip)).map_err(|e| format!("not a readable zip: {e}"))?;
    let names: Vec<String> = archive
        .file_names_raw()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    if names != ENTRIES {
        return Err(format!(
            "expected exactly the entries {ENTRIES:?} in this order, got {} entries: {names:?}",
            names.len()
        ));
    }
    let mut problems = vec![];

    let mut binary = archive
        .by_index(0)
        .map_err(|e| format!("cannot open entry 0: {e}"))?;
    check_entry_attributes(&binary, &mut problems);
    let size = binary.size();
    if size > SIZE_BUDGET {
        problems.push(format!(
            "{ENTRY}: uncompressed size {size} bytes is over the budget of {SIZE_BUDGET} bytes (1.25 MiB)"
        ));
    }
    let data = read_entry(&mut binary, &mut problems)?;
    drop(binary);
    if let Err(e) = check_static_elf(&data, arch) {
        problems.push(format!("binary: {e}"));
    }

    let mut script = archive
        .by_index(1)
        .map_err(|e| format!("cannot open entry 1: {e}"))?;
    check_entry_attributes(&script, &mut problems);
    let script = read_entry(&mut script, &mut problems)?;
    if script != wrapper {
        problems.push(format!(
            "{WRAPPER_ENTRY}: its {} bytes differ from {WRAPPER_FILE} ({} bytes): run `make layer` again",
            script.len(),
            wrapper.len()
        ));
    }

    if problems.is_empty() {
        Ok(data)
    } else {
        Err(problems.join("\n"))
    }
}

fn dist_zip_path(arch: Arch) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "dist/lambda-shell-extension-{VERSION}-{}.zip",
        arch.zip_suffix()
    ))
}

fn read_dist_zip(arch: Arch) -> Vec<u8> {
    let path = dist_zip_path(arch);
    fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (run `make layer` first)",
            path.display()
        )
    })
}

/// Extract the layer as Lambda does, into `<sandbox>/opt`, every entry with its unix mode;
/// returns the path of the binary (`<sandbox>/opt/extensions/lambda-shell-extension`). The
/// wrapper is at `<sandbox>/opt/bin/lambda-shell-extension-proxy`.
fn extract_layer(zip: &[u8], sb: &Sandbox) -> PathBuf {
    let mut archive = ZipArchive::new(Cursor::new(zip)).expect("read layer zip");
    for name in ENTRIES {
        let mut entry = archive.by_name(name).expect("layer zip entry");
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .unwrap_or_else(|e| panic!("extract {name}: {e}"));
        let path = sb.path("opt").join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, &data).unwrap_or_else(|e| panic!("write {name}: {e}"));
        let mode = (entry.external_attributes() >> 16) & 0o7777;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(format!("{mode:o}"), "755", "extracted {name}'s mode");
    }
    sb.path("opt").join(ENTRY)
}

/// Run the extracted wrapper as Lambda runs an exec wrapper (`WRAPPER COMMAND ARGS...`), with
/// the proxy on and off; the full behaviour is tested in tests/wrapper.rs on the repository's
/// copy, which the zip holds byte for byte.
fn wrapper_smoke(wrapper: &Path) {
    let show = "printf '%s|%s' \"${AWS_LAMBDA_RUNTIME_API-unset}\" \"$1\"";
    for (proxy, want) in [
        ("on", "127.0.0.1:9009|one arg"),
        ("off", "127.0.0.1:9001|one arg"),
    ] {
        let out = output_retrying(
            Command::new(wrapper)
                .args(["/bin/sh", "-c", show, "sh", "one arg"])
                .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001")
                .env("SHELL_EXT_PROXY", proxy)
                .env_remove("SHELL_EXT_PROXY_PORT")
                .env_remove("SHELL_EXT_REQUEST_HANDLER")
                .env_remove("SHELL_EXT_RESPONSE_HANDLER"),
        );
        assert!(
            out.status.success(),
            "{} with SHELL_EXT_PROXY={proxy}: {:?}\n{}",
            wrapper.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "{} with SHELL_EXT_PROXY={proxy}: AWS_LAMBDA_RUNTIME_API|argument seen by the command",
            wrapper.display()
        );
    }
}

/// Find `program` in `$PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|p| {
            fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    found
}

fn qemu_aarch64() -> PathBuf {
    find_program("qemu-aarch64").unwrap_or_else(|| {
        panic!(
            "qemu-aarch64 not found in PATH: the arm64 layer test runs the aarch64 binary under \
             qemu user-mode emulation; install it with `apt-get install qemu-user`"
        )
    })
}

fn python3() -> PathBuf {
    find_program("python3").unwrap_or_else(|| {
        panic!("python3 not found in PATH (scripts/layer-zip.py needs it): apt-get install python3")
    })
}

/// Run a command to completion, retrying on ETXTBSY (a binary this multi-threaded test process
/// just wrote can briefly be held open for writing by a child forked by another test).
fn output_retrying(cmd: &mut Command) -> Output {
    let mut attempts = 0;
    loop {
        match cmd.output() {
            Ok(out) => return out,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("run {cmd:?}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The dist/ zips (after `make layer`).

/// Packaging checks, then reproducibility: packing the extracted binary again with
/// scripts/layer-zip.py gives the same bytes.
fn layer_zip(arch: Arch) {
    let zip = read_dist_zip(arch);
    let binary = check_layer_zip(&zip, arch, &wrapper_file()).unwrap_or_else(|e| {
        panic!(
            "{} breaks the layer contract:\n{e}",
            dist_zip_path(arch).display()
        )
    });

    let tmp = tempfile::tempdir().unwrap();
    let bin_path = tmp.path().join("lambda-shell-extension");
    fs::write(&bin_path, &binary).unwrap();
    let again = tmp.path().join("again.zip");
    let out = output_retrying(
        Command::new(python3())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("scripts/layer-zip.py")
            .arg(&bin_path)
            .arg(&again),
    );
    assert!(
        out.status.success(),
        "scripts/layer-zip.py failed: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let again = fs::read(&again).unwrap();
    assert!(
        again == zip,
        "not reproducible: scripts/layer-zip.py on the extracted binary gave {} bytes that differ \
         from {} ({} bytes)",
        again.len(),
        dist_zip_path(arch).display(),
        zip.len()
    );
}

#[test]
#[ignore = "needs make layer; run make test"]
fn layer_zip_x86_64() {
    layer_zip(Arch::X86_64);
}

#[test]
#[ignore = "needs make layer; run make test"]
fn layer_zip_arm64() {
    layer_zip(Arch::Arm64);
}

/// Extract the layer into `<tmp>/opt`, check `--version`, then start the binary as Lambda does
/// (no arguments, env vars only; through `wrapper` if given) and drive one INVOKE and a SHUTDOWN.
fn smoke(arch: Arch, wrapper: Option<PathBuf>) {
    let sb = Sandbox::new();
    let bin = extract_layer(&read_dist_zip(arch), &sb);
    wrapper_smoke(&sb.path("opt").join(WRAPPER_ENTRY));

    let mut version = match &wrapper {
        Some(w) => {
            let mut cmd = Command::new(w);
            cmd.arg(&bin);
            cmd
        }
        None => Command::new(&bin),
    };
    version.arg("--version");
    let out = output_retrying(&mut version);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{version:?}: {:?}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim_end(),
        format!("lambda-shell-extension {VERSION} ({})", arch.triple()),
        "--version output"
    );

    let api = FakeApi::start();
    let seen = sb.p("seen");
    fs::create_dir_all(&seen).unwrap();
    let handler = sb.script(
        "handler.sh",
        &format!(
            "#!/bin/sh\ncat > {seen}/stdin.$LAMBDA_EVENT_TYPE\necho \"$LAMBDA_EVENT_TYPE\" >> {seen}/events\n"
        ),
    );
    let d = deadline_in(30_000);
    let invoke = api.push_invoke("layer-smoke-1", d);
    let shutdown = api.push_shutdown("spindown", d + 1);
    let mut launcher = sb.ext(&api).binary(&bin).handler(&handler);
    if let Some(w) = wrapper {
        launcher = launcher.wrapper(w);
    }
    let mut ext = launcher.spawn();
    assert_eq!(ext.path, bin, "the extracted layer binary runs in place");
    ext.expect_exit(0, secs(30));

    let regs = api.requests_to(Endpoint::Register);
    assert_eq!(regs.len(), 1, "{}", api.describe());
    assert_eq!(
        regs[0].header("Lambda-Extension-Name"),
        Some(DEFAULT_NAME),
        "registration name: {:?}",
        regs[0]
    );
    assert_eq!(
        api.served(),
        vec![invoke.clone(), shutdown.clone()],
        "{}",
        api.describe()
    );
    assert_all_known(&api);
    let read = |name: &str| {
        fs::read(format!("{seen}/{name}")).unwrap_or_else(|e| {
            panic!(
                "handler output {name}: {e}\n{}\n{}",
                api.describe(),
                ext.output_tail()
            )
        })
    };
    assert_eq!(
        String::from_utf8_lossy(&read("stdin.INVOKE")),
        String::from_utf8_lossy(&invoke),
        "handler stdin for INVOKE"
    );
    assert_eq!(
        read("stdin.INVOKE"),
        invoke,
        "handler stdin for INVOKE (bytes)"
    );
    assert_eq!(
        read("stdin.SHUTDOWN"),
        shutdown,
        "handler stdin for SHUTDOWN"
    );
    assert_eq!(
        String::from_utf8_lossy(&read("events")),
        "INVOKE\nSHUTDOWN\n",
        "LAMBDA_EVENT_TYPE of each handler run"
    );
}

#[test]
#[ignore = "needs make layer; run make test"]
fn smoke_x86_64() {
    smoke(Arch::X86_64, None);
}

/// qemu-user passes the binary's path as the guest's argv[0], so it registers under the file
/// name as on Lambda.
#[test]
#[ignore = "needs make layer; run make test"]
fn smoke_arm64_under_qemu() {
    smoke(Arch::Arm64, Some(qemu_aarch64()));
}

// ---------------------------------------------------------------------------------------------
// The checkers can fail (no dist/ needed).

/// A minimal ELF64 file: header, then `phdrs` program headers of the given types.
fn fake_elf(machine: u16, e_type: u16, phdrs: &[u32]) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // ELFCLASS64
    b[5] = 1; // little-endian
    b[6] = 1; // EV_CURRENT
    b[16..18].copy_from_slice(&e_type.to_le_bytes());
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    b[20..24].copy_from_slice(&1u32.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    b[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
    for &p_type in phdrs {
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&p_type.to_le_bytes());
        b.extend_from_slice(&ph);
    }
    b
}

fn static_elf(arch: Arch) -> Vec<u8> {
    fake_elf(
        arch.e_machine(),
        ET_EXEC,
        &[6, PT_LOAD, PT_LOAD, 0x6474e551],
    )
}

fn host_arch() -> Arch {
    if cfg!(target_arch = "aarch64") {
        Arch::Arm64
    } else {
        Arch::X86_64
    }
}

fn assert_err_contains<T: std::fmt::Debug>(r: Result<T, String>, want: &str, what: &str) {
    match r {
        Ok(v) => panic!("{what}: accepted ({v:?}), expected an error about {want:?}"),
        Err(e) => assert!(
            e.contains(want),
            "{what}: error {e:?} does not mention {want:?}"
        ),
    }
}

/// Real dynamically linked executables (`/bin/true`, and the test's own debug build of the
/// extension, linked against glibc) have a PT_INTERP and are rejected.
#[test]
fn elf_check_rejects_dynamically_linked_binaries() {
    for path in ["/bin/true", BIN] {
        let b = fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let elf = parse_elf(&b).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(elf.e_machine, host_arch().e_machine(), "{path}");
        assert!(elf.program_headers.contains(&PT_INTERP), "{path}: {elf:?}");
        assert_err_contains(check_static_elf(&b, host_arch()), "PT_INTERP", path);
    }
}

#[test]
fn elf_check_accepts_static_and_rejects_each_violation() {
    for arch in [Arch::X86_64, Arch::Arm64] {
        check_static_elf(&static_elf(arch), arch).unwrap();
        check_static_elf(&fake_elf(arch.e_machine(), ET_DYN, &[PT_LOAD]), arch).unwrap();
    }
    let good = static_elf(Arch::X86_64);
    assert_err_contains(
        check_static_elf(&good, Arch::Arm64),
        "e_machine 62 is not 183",
        "x86_64 binary in the arm64 layer",
    );
    assert_err_contains(
        check_static_elf(&static_elf(Arch::Arm64), Arch::X86_64),
        "e_machine 183 is not 62",
        "arm64 binary in the x86_64 layer",
    );
    let x86 = Arch::X86_64.e_machine();
    for (bytes, want, what) in [
        (
            fake_elf(x86, ET_EXEC, &[PT_LOAD, PT_INTERP]),
            "PT_INTERP",
            "interpreter",
        ),
        (
            fake_elf(x86, ET_DYN, &[PT_LOAD, PT_DYNAMIC]),
            "PT_DYNAMIC",
            "static-pie",
        ),
        (fake_elf(x86, 1, &[PT_LOAD]), "e_type 1", "relocatable"),
        (fake_elf(x86, 4, &[PT_LOAD]), "e_type 4", "core"),
        (fake_elf(x86, ET_EXEC, &[6]), "no PT_LOAD", "nothing loaded"),
        (fake_elf(x86, ET_EXEC, &[]), "e_phnum = 0", "no phdrs"),
        (good[..100].to_vec(), "past the end", "truncated phdrs"),
        (good[..40].to_vec(), "too short", "truncated header"),
        (
            b"#!/bin/sh\necho this is not an ELF binary at all, only a shell script\nexit 0\n"
                .to_vec(),
            "no ELF magic",
            "script",
        ),
    ] {
        assert_err_contains(check_static_elf(&bytes, Arch::X86_64), want, what);
    }
    let mut be = good.clone();
    be[5] = 2;
    assert_err_contains(check_static_elf(&be, Arch::X86_64), "EI_DATA", "big-endian");
    let mut class32 = good.clone();
    class32[4] = 1;
    assert_err_contains(
        check_static_elf(&class32, Arch::X86_64),
        "EI_CLASS",
        "ELF32",
    );
}

/// How a zip made in the test differs from a good layer zip.
struct ZipSpec {
    entries: Vec<(&'static str, Vec<u8>)>,
    /// The mode of every entry but the wrapper.
    mode: u32,
    /// The wrapper's mode.
    wrapper_mode: u32,
    method: CompressionMethod,
    time: (u16, u8, u8, u8, u8, u8),
}

impl ZipSpec {
    fn good(arch: Arch) -> ZipSpec {
        ZipSpec {
            entries: vec![(ENTRY, static_elf(arch)), (WRAPPER_ENTRY, wrapper_file())],
            mode: ENTRY_MODE,
            wrapper_mode: ENTRY_MODE,
            method: CompressionMethod::Deflated,
            time: (1980, 1, 1, 0, 0, 0),
        }
    }

    /// A good zip whose binary is `binary`.
    fn with_binary(binary: Vec<u8>) -> ZipSpec {
        ZipSpec {
            entries: vec![(ENTRY, binary), (WRAPPER_ENTRY, wrapper_file())],
            ..ZipSpec::good(Arch::X86_64)
        }
    }

    fn build(&self) -> Vec<u8> {
        let (y, mo, d, h, mi, s) = self.time;
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in &self.entries {
            let mode = if *name == WRAPPER_ENTRY {
                self.wrapper_mode
            } else {
                self.mode
            };
            let options = zip::write::SimpleFileOptions::default()
                .system(zip::System::Unix)
                .external_attributes(mode << 16)
                .compression_method(self.method)
                .last_modified_time(DateTime::from_date_and_time(y, mo, d, h, mi, s).unwrap());
            w.start_file(*name, options).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }
}

#[test]
fn zip_check_accepts_good_and_rejects_each_violation() {
    let wrapper = wrapper_file();
    for arch in [Arch::X86_64, Arch::Arm64] {
        let zip = ZipSpec::good(arch).build();
        assert_eq!(
            check_layer_zip(&zip, arch, &wrapper).unwrap(),
            static_elf(arch)
        );
    }
    // A binary of exactly 1.25 MiB is within budget.
    let mut big = static_elf(Arch::X86_64);
    big.resize(SIZE_BUDGET as usize, 0);
    check_layer_zip(
        &ZipSpec::with_binary(big.clone()).build(),
        Arch::X86_64,
        &wrapper,
    )
    .unwrap();

    let x86 = Arch::X86_64;
    let mut too_big = big;
    too_big.push(0);
    let mut edited = wrapper.clone();
    edited.extend_from_slice(b"# edited after make layer\n");
    let bad: Vec<(ZipSpec, &str, &str)> = vec![
        (
            ZipSpec {
                entries: vec![
                    ("lambda-shell-extension", static_elf(x86)),
                    (WRAPPER_ENTRY, wrapper.clone()),
                ],
                ..ZipSpec::good(x86)
            },
            "expected exactly the entries",
            "binary not under extensions/",
        ),
        (
            ZipSpec {
                entries: vec![
                    (ENTRY, static_elf(x86)),
                    ("extensions/lambda-shell-extension-proxy", wrapper.clone()),
                ],
                ..ZipSpec::good(x86)
            },
            "expected exactly the entries",
            "wrapper under extensions/ (Lambda would start it as an extension)",
        ),
        (
            ZipSpec {
                entries: vec![(WRAPPER_ENTRY, wrapper.clone()), (ENTRY, static_elf(x86))],
                ..ZipSpec::good(x86)
            },
            "in this order",
            "entries swapped",
        ),
        (
            ZipSpec {
                entries: vec![(ENTRY, static_elf(x86))],
                ..ZipSpec::good(x86)
            },
            "got 1 entries",
            "no wrapper (the old layout)",
        ),
        (
            ZipSpec {
                entries: vec![
                    (ENTRY, static_elf(x86)),
                    (WRAPPER_ENTRY, wrapper.clone()),
                    ("extensions/README", b"hi".to_vec()),
                ],
                ..ZipSpec::good(x86)
            },
            "got 3 entries",
            "three entries",
        ),
        (
            ZipSpec {
                entries: vec![],
                ..ZipSpec::good(x86)
            },
            "got 0 entries",
            "empty zip",
        ),
        (
            ZipSpec {
                mode: 0o100644,
                ..ZipSpec::good(x86)
            },
            "extensions/lambda-shell-extension: unix mode 100644",
            "binary not executable",
        ),
        (
            ZipSpec {
                mode: 0o100775,
                ..ZipSpec::good(x86)
            },
            "extensions/lambda-shell-extension: unix mode 100775",
            "binary group-writable",
        ),
        (
            ZipSpec {
                wrapper_mode: 0o100644,
                ..ZipSpec::good(x86)
            },
            "bin/lambda-shell-extension-proxy: unix mode 100644",
            "wrapper not executable",
        ),
        (
            ZipSpec {
                wrapper_mode: 0o120755,
                ..ZipSpec::good(x86)
            },
            "bin/lambda-shell-extension-proxy: unix mode 120755",
            "wrapper a symlink",
        ),
        (
            ZipSpec {
                entries: vec![(ENTRY, static_elf(x86)), (WRAPPER_ENTRY, edited)],
                ..ZipSpec::good(x86)
            },
            "differ from",
            "wrapper not the repository's",
        ),
        (
            ZipSpec {
                entries: vec![(ENTRY, static_elf(x86)), (WRAPPER_ENTRY, vec![])],
                ..ZipSpec::good(x86)
            },
            "differ from",
            "wrapper empty",
        ),
        (
            ZipSpec {
                method: CompressionMethod::Stored,
                ..ZipSpec::good(x86)
            },
            "not Deflated",
            "stored",
        ),
        (
            ZipSpec {
                time: (2024, 5, 6, 7, 8, 10),
                ..ZipSpec::good(x86)
            },
            "timestamp",
            "build time",
        ),
        (
            ZipSpec {
                time: (1980, 1, 1, 0, 0, 2),
                ..ZipSpec::good(x86)
            },
            "timestamp",
            "two seconds off",
        ),
        (
            ZipSpec::with_binary(too_big),
            "over the budget",
            "1.25 MiB + 1 byte",
        ),
        (
            ZipSpec::with_binary(fake_elf(62, ET_EXEC, &[PT_LOAD, PT_INTERP])),
            "PT_INTERP",
            "dynamic binary",
        ),
        (
            ZipSpec::good(Arch::Arm64),
            "e_machine 183 is not 62",
            "wrong architecture",
        ),
    ];
    for (spec, want, what) in bad {
        assert_err_contains(check_layer_zip(&spec.build(), x86, &wrapper), want, what);
    }
    // A zip without the Unix "made by" system: the mode is not honoured (each entry's central
    // directory header is checked).
    for (index, name) in ENTRIES.iter().enumerate() {
        let mut zip = ZipSpec::good(x86).build();
        let cd = zip
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"PK\x01\x02")
            .map(|(at, _)| at)
            .nth(index)
            .expect("central directory header");
        assert_eq!(zip[cd + 5], 3, "made by Unix");
        zip[cd + 5] = 0;
        assert_err_contains(
            check_layer_zip(&zip, x86, &wrapper),
            &format!("{name}: unix mode 100755 (made by Dos)"),
            "made by MS-DOS",
        );
    }
    assert_err_contains(
        check_layer_zip(b"PK\x05\x06 this is not a zip", x86, &wrapper),
        "not a readable zip",
        "garbage",
    );
}

/// The wrapper in the repository is what the zip's entry must be: an executable POSIX sh
/// script with LF line endings (scripts/layer-zip.py refuses anything else).
#[test]
fn wrapper_file_is_an_executable_sh_script() {
    let mode = fs::metadata(WRAPPER_FILE).unwrap().permissions().mode() & 0o7777;
    assert_eq!(format!("{mode:o}"), "755", "{WRAPPER_FILE}'s mode");
    let wrapper = wrapper_file();
    assert!(
        wrapper.starts_with(b"#!/bin/sh\n"),
        "{WRAPPER_FILE}: #!/bin/sh"
    );
    assert!(
        !wrapper.contains(&b'\r'),
        "{WRAPPER_FILE}: CRLF line endings"
    );
}

/// The SAM template cannot compute its zip paths (SAM CLI does not resolve `!Sub` in a local
/// `ContentUri`), so they are written out: they must follow the package version.
#[test]
fn sam_template_points_at_this_versions_zips() {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/layer/template.yaml"))
            .expect("layer/template.yaml");
    for arch in ["x86_64", "arm64"] {
        let zip = format!(
            "ContentUri: ../dist/lambda-shell-extension-{}-{arch}.zip",
            env!("CARGO_PKG_VERSION")
        );
        assert!(
            template.contains(&zip),
            "layer/template.yaml should contain `{zip}`: update it after a version bump"
        );
    }
}

/// The example function ships a copy of scripts/audit-requests.sh (SAM packages `CodeUri` as
/// it is, so the script has to be in layer/example/): it must stay the same script, executable,
/// and the template must start the runtime through the wrapper the layer ships.
#[test]
fn sam_example_ships_the_audit_script_and_uses_the_wrapper() {
    let root = env!("CARGO_MANIFEST_DIR");
    let copy = format!("{root}/layer/example/audit-requests.sh");
    let original = format!("{root}/scripts/audit-requests.sh");
    assert!(
        fs::read(&copy).unwrap() == fs::read(&original).unwrap(),
        "{copy} differs from {original}: cp scripts/audit-requests.sh layer/example/"
    );
    let mode = fs::metadata(&copy).unwrap().permissions().mode() & 0o7777;
    assert_eq!(format!("{mode:o}"), "755", "{copy}'s mode");
    let template = fs::read_to_string(format!("{root}/layer/template.yaml")).unwrap();
    for line in [
        format!("AWS_LAMBDA_EXEC_WRAPPER: /opt/{WRAPPER_ENTRY}"),
        "SHELL_EXT_REQUEST_HANDLER: /var/task/audit-requests.sh".into(),
        "SHELL_EXT_RESPONSE_HANDLER: /var/task/audit-requests.sh".into(),
    ] {
        assert!(
            template.contains(&line),
            "layer/template.yaml should contain `{line}`"
        );
    }
}
