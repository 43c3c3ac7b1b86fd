//! Loop devices through the kernel's ioctls (no losetup): get a free device from
//! /dev/loop-control, bind the image with LOOP_CONFIGURE (or LOOP_SET_FD + LOOP_SET_STATUS64
//! on kernels before 5.8), always with LO_FLAGS_AUTOCLEAR so the device frees itself when its
//! last user (the staging mount) goes away, even if molt is killed.

use nix::errno::Errno;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

// <linux/loop.h>; libc does not carry these.
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A bound loop device, held open: while this handle lives the autoclear cannot fire, so the
/// caller keeps it until the mount holds the device, then drops it.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    pub number: u32,
    image: PathBuf,
    file: File,
}

/// The step and errno of a failed loop operation.
#[derive(Debug)]
pub struct LoopError {
    pub step: String,
    pub errno: Errno,
}

fn err(step: impl Into<String>, errno: Errno) -> LoopError {
    LoopError { step: step.into(), errno }
}

fn errno_of(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Binds `image` to a free loop device. `read_only` opens the image read-only and marks the
/// device so.
pub fn attach(image: &Path, read_only: bool) -> Result<LoopDevice, LoopError> {
    let backing = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(image)
        .map_err(|e| err(format!("open image {}", image.display()), errno_of(e)))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| err("open /dev/loop-control", errno_of(e)))?;
    // Another process (molt or losetup) may take the device between GET_FREE and CONFIGURE;
    // the kernel then answers EBUSY and we ask again.
    let mut last = Errno::EBUSY;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(err("LOOP_CTL_GET_FREE", Errno::last()));
        }
        let number = n as u32;
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let dev = match open_loop(&path, read_only) {
            Ok(f) => f,
            Err(e) => return Err(err(format!("open {}", path.display()), e)),
        };
        match configure(&dev, &backing, image, read_only) {
            Ok(()) => {
                return Ok(LoopDevice { path, number, image: image.to_path_buf(), file: dev });
            }
            Err(Errno::EBUSY) => {
                last = Errno::EBUSY;
                continue;
            }
            Err(e) => return Err(err(format!("bind {} to {}", image.display(), path.display()), e)),
        }
    }
    Err(err("find a free loop device", last))
}

fn open_loop(path: &Path, read_only: bool) -> Result<File, Errno> {
    // udev may not have created the node yet right after GET_FREE added the device.
    for _ in 0..50 {
        match OpenOptions::new().read(true).write(!read_only).open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => return Err(errno_of(e)),
        }
    }
    Err(Errno::ENOENT)
}

fn info(image: &Path, read_only: bool) -> LoopInfo64 {
    let mut info = LoopInfo64 {
        lo_device: 0,
        lo_inode: 0,
        lo_rdevice: 0,
        lo_offset: 0,
        lo_sizelimit: 0,
        lo_number: 0,
        lo_encrypt_type: 0,
        lo_encrypt_key_size: 0,
        lo_flags: LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 },
        lo_file_name: [0; LO_NAME_SIZE],
        lo_crypt_name: [0; LO_NAME_SIZE],
        lo_encrypt_key: [0; 32],
        lo_init: [0; 2],
    };
    // The name is informational (shown by losetup); truncated like losetup does.
    let name = image.as_os_str().as_encoded_bytes();
    let n = name.len().min(LO_NAME_SIZE - 1);
    info.lo_file_name[..n].copy_from_slice(&name[..n]);
    info
}

fn configure(dev: &File, backing: &File, image: &Path, read_only: bool) -> Result<(), Errno> {
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: info(image, read_only),
        reserved: [0; 8],
    };
    // SAFETY: config is a valid loop_config that outlives the call.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config as *const LoopConfig) };
    if rc == 0 {
        return Ok(());
    }
    let e = Errno::last();
    if e != Errno::EINVAL && e != Errno::ENOTTY {
        return Err(e);
    }
    // Kernels before 5.8 lack LOOP_CONFIGURE: bind, then set the flags. Not atomic, which is why
    // LOOP_CONFIGURE is tried first.
    // SAFETY: LOOP_SET_FD takes the backing fd by value.
    if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_FD, backing.as_raw_fd() as libc::c_ulong) } != 0 {
        return Err(Errno::last());
    }
    let info = info(image, read_only);
    // SAFETY: info is a valid loop_info64 that outlives the call.
    if unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_SET_STATUS64, &info as *const LoopInfo64) } != 0 {
        let e = Errno::last();
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
        return Err(e);
    }
    Ok(())
}

impl LoopDevice {
    /// Unbinds (undo of a failed attach) and waits until the device is free. While another
    /// process has it open (udev probing the new device, blkid) the kernel only marks it for
    /// autoclear and unbinds at that process's close, so returning at once would report
    /// success with the device still bound.
    pub fn detach(self) -> Result<(), LoopError> {
        // SAFETY: LOOP_CLR_FD takes no argument.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), LOOP_CLR_FD, 0) };
        if rc != 0 {
            let e = Errno::last();
            if e != Errno::ENXIO {
                return Err(err(format!("LOOP_CLR_FD {}", self.path.display()), e));
            }
        }
        let LoopDevice { number, image, file, .. } = self;
        drop(file);
        release(number, &image)
    }
}

/// The backing file of loop device `number`, or None when it is not bound.
pub fn backing_file(number: u32) -> Option<PathBuf> {
    let s = std::fs::read_to_string(format!("/sys/block/loop{number}/loop/backing_file")).ok()?;
    let s = s.trim_end_matches('\n');
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// Unbinds loop device `number` if it is still bound to `image` (the staging mount is gone but
/// the device lingers: a crash between bind and mount on a kernel without autoclear, or a
/// device someone else opened). Waits up to 2 s first, since autoclear runs on the last close,
/// and afterwards, since a CLR_FD on a device still open elsewhere is deferred the same way.
pub fn release(number: u32, image: &Path) -> Result<(), LoopError> {
    if wait_unbound(number, image) {
        return Ok(());
    }
    let path = format!("/dev/loop{number}");
    let f = OpenOptions::new()
        .read(true)
        .open(&path)
        .map_err(|e| err(format!("open {path}"), errno_of(e)))?;
    // SAFETY: LOOP_CLR_FD takes no argument.
    if unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD, 0) } != 0 {
        let e = Errno::last();
        if e != Errno::ENXIO {
            return Err(err(format!("LOOP_CLR_FD {path}"), e));
        }
    }
    drop(f);
    if wait_unbound(number, image) {
        Ok(())
    } else {
        Err(err(format!("{path} stays bound to {} (held open by another process)", image.display()), Errno::EBUSY))
    }
}

/// Polls sysfs for up to 2 s until `number` is no longer bound to `image`.
fn wait_unbound(number: u32, image: &Path) -> bool {
    for _ in 0..100 {
        match backing_file(number) {
            Some(b) if b == image => std::thread::sleep(std::time::Duration::from_millis(20)),
            _ => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
