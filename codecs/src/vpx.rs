//! The only `unsafe` code of the core: a minimal safe wrapper over libvpx's VP8 encoder and
//! decoder, through the raw bindings of `env-libvpx-sys` (pre-generated for Debian's libvpx 1.12,
//! so no bindgen at build time).
//!
//! Why we call the C API ourselves: the safe crates on crates.io either have no decoder
//! (`vpx-encode`) or need libvpx 1.13 (`vpx-rs` uses a 1.13-only control and fails to build on
//! Debian 12), and neither can change the bitrate of a running encoder
//! (`vpx_codec_enc_config_set`), which the adaptive ladder needs.
//!
//! What keeps it sound:
//! - Each context is boxed (libvpx keeps pointers into it) and destroyed exactly once, in `Drop`.
//! - Configuration structs are filled by libvpx (`vpx_codec_enc_config_default`) before they are
//!   read; nothing is zero-initialised that has enum fields without a zero variant.
//! - Input pictures are checked against their declared size before libvpx reads them, and the
//!   wrapped image only borrows the caller's buffer for the duration of one `vpx_codec_encode`.
//! - Output packets and decoded images belong to libvpx and stay valid only until the next call
//!   on the same context: they are copied out at once, and never outlive the `&mut self` borrow.
//! - Every return code is checked; errors become `String`s with libvpx's own message.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_long, c_uint, c_ulong};

use vpx_sys::{
    vpx_codec_control_, vpx_codec_ctx_t, vpx_codec_dec_cfg_t, vpx_codec_dec_init_ver, vpx_codec_decode,
    vpx_codec_destroy, vpx_codec_enc_cfg_t, vpx_codec_enc_config_default, vpx_codec_enc_config_set,
    vpx_codec_enc_init_ver, vpx_codec_encode, vpx_codec_err_t, vpx_codec_err_to_string,
    vpx_codec_error_detail, vpx_codec_get_cx_data, vpx_codec_get_frame, vpx_codec_iter_t, vpx_codec_vp8_cx,
    vpx_codec_vp8_dx, vpx_image_t, vpx_img_fmt, vpx_img_wrap,
};

use super::{chroma_size, I420Frame};

/// libvpx's message for an error code, with the context's detail when there is one.
fn message(error: vpx_codec_err_t, ctx: Option<&mut vpx_codec_ctx_t>) -> String {
    // SAFETY: libvpx returns static strings for error codes; the detail string belongs to the
    // context and is copied before any other call on it.
    unsafe {
        let text = CStr::from_ptr(vpx_codec_err_to_string(error)).to_string_lossy().into_owned();
        let detail = ctx.map(|ctx| vpx_codec_error_detail(ctx)).filter(|p| !p.is_null());
        match detail {
            Some(detail) => format!("{text} ({})", CStr::from_ptr(detail).to_string_lossy()),
            None => text,
        }
    }
}

fn check(error: vpx_codec_err_t, ctx: Option<&mut vpx_codec_ctx_t>) -> Result<(), String> {
    if error == vpx_codec_err_t::VPX_CODEC_OK {
        Ok(())
    } else {
        Err(message(error, ctx))
    }
}

/// A zeroed context, as libvpx expects before `*_init_ver` (all its fields are pointers, integers
/// or an error enum whose zero is `VPX_CODEC_OK`).
fn zeroed_context() -> Box<vpx_codec_ctx_t> {
    // SAFETY: see above; zero is a valid value for every field of `vpx_codec_ctx_t`.
    Box::new(unsafe { MaybeUninit::<vpx_codec_ctx_t>::zeroed().assume_init() })
}

/// What an encoder is set up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EncoderSettings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bitrate_kbps: u32,
    pub keyframe_max_distance: u32,
}

/// One encoded frame copied out of libvpx.
pub(crate) struct Packet {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// A running VP8 encoder (one-pass real-time CBR).
pub(crate) struct RawEncoder {
    ctx: Box<vpx_codec_ctx_t>,
    cfg: vpx_codec_enc_cfg_t,
    settings: EncoderSettings,
}

// SAFETY: a libvpx context has no thread affinity; `RawEncoder` is only used through `&mut self`,
// so one thread at a time.
unsafe impl Send for RawEncoder {}

impl RawEncoder {
    pub fn new(settings: EncoderSettings) -> Result<RawEncoder, String> {
        if settings.width < 2 || settings.height < 2 || settings.width % 2 == 1 || settings.height % 2 == 1 {
            return Err(format!("{}x{} is not an even picture size", settings.width, settings.height));
        }
        let mut cfg = MaybeUninit::<vpx_codec_enc_cfg_t>::uninit();
        // SAFETY: libvpx fills the whole configuration when it returns OK; only then is it read.
        let mut cfg = unsafe {
            check(vpx_codec_enc_config_default(vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0), None)?;
            cfg.assume_init()
        };
        cfg.g_w = settings.width;
        cfg.g_h = settings.height;
        cfg.g_timebase.num = 1;
        cfg.g_timebase.den = 1000;
        cfg.g_threads = 1;
        cfg.g_lag_in_frames = 0;
        cfg.g_error_resilient = 1; // VPX_ERROR_RESILIENT_DEFAULT: a lost frame hurts less
        cfg.rc_dropframe_thresh = 0;
        cfg.rc_end_usage = vpx_sys::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = settings.bitrate_kbps;
        cfg.rc_min_quantizer = 2;
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        cfg.kf_mode = vpx_sys::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = settings.keyframe_max_distance;
        let mut ctx = zeroed_context();
        // SAFETY: `ctx` is a zeroed, boxed context that stays at this address; `cfg` is a complete
        // configuration that libvpx copies.
        unsafe {
            check(
                vpx_codec_enc_init_ver(
                    &mut *ctx,
                    vpx_codec_vp8_cx(),
                    &cfg,
                    0,
                    vpx_sys::VPX_ENCODER_ABI_VERSION as c_int,
                ),
                None,
            )?;
        }
        let mut encoder = RawEncoder { ctx, cfg, settings };
        // Speed -6: WebRTC's choice on desktops (fast, real-time quality).
        // SAFETY: VP8E_SET_CPUUSED takes one int argument.
        let result = unsafe {
            vpx_codec_control_(
                &mut *encoder.ctx,
                vpx_sys::vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int,
                -6 as c_int,
            )
        };
        check(result, Some(&mut encoder.ctx))?;
        Ok(encoder)
    }

    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// Changes the target bitrate of the running encoder (no keyframe, no restart).
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<(), String> {
        self.cfg.rc_target_bitrate = kbps;
        // SAFETY: the context is initialised; libvpx copies the configuration.
        let result = unsafe { vpx_codec_enc_config_set(&mut *self.ctx, &self.cfg) };
        check(result, Some(&mut self.ctx))?;
        self.settings.bitrate_kbps = kbps;
        Ok(())
    }

    /// Encodes one picture of exactly the encoder's size.
    pub fn encode(
        &mut self,
        picture: &I420Frame,
        pts_ms: i64,
        duration_ms: u32,
        keyframe: bool,
    ) -> Result<Vec<Packet>, String> {
        picture.check().map_err(|e| e.to_string())?;
        if (picture.width, picture.height) != (self.settings.width, self.settings.height) {
            return Err(format!(
                "a {}x{} picture for a {}x{} encoder",
                picture.width, picture.height, self.settings.width, self.settings.height
            ));
        }
        let mut image = MaybeUninit::<vpx_image_t>::uninit();
        // SAFETY: `vpx_img_wrap` initialises the image descriptor (it only records the pointer we
        // give it); the planes are then pointed at our three checked buffers, each of the size
        // libvpx reads for an I420 picture of this size with these strides.
        let mut image = unsafe {
            let wrapped = vpx_img_wrap(
                image.as_mut_ptr(),
                vpx_img_fmt::VPX_IMG_FMT_I420,
                picture.width as c_uint,
                picture.height as c_uint,
                1,
                picture.y.as_ptr() as *mut u8,
            );
            if wrapped.is_null() {
                return Err("cannot wrap the picture".into());
            }
            image.assume_init()
        };
        let (chroma_width, _) = chroma_size(picture.width, picture.height);
        image.planes[0] = picture.y.as_ptr() as *mut u8;
        image.planes[1] = picture.u.as_ptr() as *mut u8;
        image.planes[2] = picture.v.as_ptr() as *mut u8;
        image.stride[0] = picture.width as c_int;
        image.stride[1] = chroma_width as c_int;
        image.stride[2] = chroma_width as c_int;
        let flags = if keyframe { vpx_sys::VPX_EFLAG_FORCE_KF as c_long } else { 0 };
        // SAFETY: the image borrows `picture` only for this call (libvpx copies the pixels into
        // its own buffers, as there is no look-ahead).
        let result = unsafe {
            vpx_codec_encode(
                &mut *self.ctx,
                &image,
                pts_ms,
                c_ulong::from(duration_ms),
                flags,
                c_ulong::from(vpx_sys::VPX_DL_REALTIME),
            )
        };
        check(result, Some(&mut self.ctx))?;
        let mut packets = Vec::new();
        let mut iter: vpx_codec_iter_t = std::ptr::null();
        loop {
            // SAFETY: packets belong to the context and are valid until its next call; frame
            // packets are copied out at once.
            let packet = unsafe { vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if packet.is_null() {
                break;
            }
            // SAFETY: non-null packets from libvpx are valid; the `frame` member is the one set
            // for `VPX_CODEC_CX_FRAME_PKT`.
            unsafe {
                if (*packet).kind == vpx_sys::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                    let frame = (*packet).data.frame;
                    if !frame.buf.is_null() {
                        packets.push(Packet {
                            data: std::slice::from_raw_parts(frame.buf as *const u8, frame.sz as usize)
                                .to_vec(),
                            keyframe: frame.flags & vpx_sys::VPX_FRAME_IS_KEY != 0,
                        });
                    }
                }
            }
        }
        Ok(packets)
    }
}

impl Drop for RawEncoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed only here.
        unsafe {
            vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// A running VP8 decoder.
pub(crate) struct RawDecoder {
    ctx: Box<vpx_codec_ctx_t>,
}

// SAFETY: as for `RawEncoder`.
unsafe impl Send for RawDecoder {}

impl RawDecoder {
    pub fn new() -> Result<RawDecoder, String> {
        let mut ctx = zeroed_context();
        let cfg = vpx_codec_dec_cfg_t { threads: 1, w: 0, h: 0 };
        // SAFETY: a zeroed, boxed context; libvpx copies the configuration.
        unsafe {
            check(
                vpx_codec_dec_init_ver(
                    &mut *ctx,
                    vpx_codec_vp8_dx(),
                    &cfg,
                    0,
                    vpx_sys::VPX_DECODER_ABI_VERSION as c_int,
                ),
                None,
            )?;
        }
        Ok(RawDecoder { ctx })
    }

    /// Decodes one frame; returns the last picture it produced (VP8 gives at most one).
    pub fn decode(&mut self, data: &[u8]) -> Result<Option<I420Frame>, String> {
        if data.is_empty() {
            return Err("an empty frame".into());
        }
        let size = c_uint::try_from(data.len()).map_err(|_| "a frame larger than 4 GiB".to_owned())?;
        // SAFETY: libvpx reads `size` bytes of `data` during the call only.
        let result =
            unsafe { vpx_codec_decode(&mut *self.ctx, data.as_ptr(), size, std::ptr::null_mut(), 0) };
        check(result, Some(&mut self.ctx))?;
        let mut picture = None;
        let mut iter: vpx_codec_iter_t = std::ptr::null();
        loop {
            // SAFETY: the image belongs to the decoder and is valid until its next call; it is
            // copied out at once.
            let image = unsafe { vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
            if image.is_null() {
                break;
            }
            // SAFETY: a non-null image from libvpx is valid and describes its planes.
            picture = Some(unsafe { copy_image(&*image)? });
        }
        Ok(picture)
    }
}

impl Drop for RawDecoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed only here.
        unsafe {
            vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// Copies a decoded 8-bit 4:2:0 image into an [`I420Frame`].
///
/// # Safety
/// `image` must be a valid image from libvpx whose planes hold `d_h` rows of `stride` bytes.
unsafe fn copy_image(image: &vpx_image_t) -> Result<I420Frame, String> {
    let (u, v) = match image.fmt {
        vpx_img_fmt::VPX_IMG_FMT_I420 => (1, 2),
        vpx_img_fmt::VPX_IMG_FMT_YV12 => (2, 1),
        other => return Err(format!("a decoded picture in {other:?}, not 8-bit 4:2:0")),
    };
    let (width, height) = (image.d_w, image.d_h);
    if width == 0 || height == 0 || image.stride.iter().take(3).any(|&s| s < 0) {
        return Err("a decoded picture without a size".into());
    }
    let (cw, ch) = chroma_size(width, height);
    let plane = |index: usize, w: u32, h: u32| -> Vec<u8> {
        let stride = image.stride[index] as usize;
        let mut out = Vec::with_capacity((w * h) as usize);
        for row in 0..h as usize {
            // SAFETY: per the function's contract, each row holds at least `w` bytes.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(image.planes[index].add(row * stride), w as usize)
            });
        }
        out
    };
    Ok(I420Frame { width, height, y: plane(0, width, height), u: plane(u, cw, ch), v: plane(v, cw, ch) })
}
