//! A heap-free program over the whole no_std API: head, learner, online learning with
//! replay and class means, persistence. It exists to be linked, not run: linking fails
//! if anything needs an allocator. The entry symbol keeps everything reachable.
#![no_std]
#![no_main]

use core::hint::black_box;
use core::panic::PanicInfo;

use edgetune_core::buffer::SampleBuffer;
use edgetune_core::classes::ClassMeans;
use edgetune_core::online::{Online, OnlineConfig};
use edgetune_core::{Config, Dims, Head, Learner, Optimizer, persist};

const DIMS: Dims = Dims::mlp(64, 16, 10);
const PARAMS: usize = DIMS.param_len();
const STATE: usize = Learner::<()>::state_len(DIMS, &Optimizer::ADAM);
const SLOTS: usize = 32;
const MEANS: usize = ClassMeans::<()>::storage_len(64, 10);

static mut HEAD: [f32; PARAMS] = [0.0; PARAMS];
static mut LEARNER: [f32; STATE] = [0.0; STATE];
static mut BUFFER: [f32; SLOTS * 64] = [0.0; SLOTS * 64];
static mut CLASS_MEANS: [f32; MEANS] = [0.0; MEANS];
static mut FLASH: [u8; 4 * (PARAMS * 3) + 64] = [0; 4 * (PARAMS * 3) + 64];

fn run() -> Result<usize, ()> {
    // SAFETY: single-threaded program; each static is borrowed once.
    let (head, learner, buffer, means, flash) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(HEAD),
            &mut *core::ptr::addr_of_mut!(LEARNER),
            &mut *core::ptr::addr_of_mut!(BUFFER),
            &mut *core::ptr::addr_of_mut!(CLASS_MEANS),
            &mut *core::ptr::addr_of_mut!(FLASH),
        )
    };
    let head = Head::new(DIMS, 0, &mut head[..]).map_err(drop)?;
    let learner = Learner::new(DIMS, Config::DEFAULT, &mut learner[..]).map_err(drop)?;
    let buffer = SampleBuffer::<_, SLOTS>::new(64, &mut buffer[..]).map_err(drop)?;
    let means = ClassMeans::new(64, 10, &mut means[..]).map_err(drop)?;
    let mut online =
        Online::new(head, learner, buffer, means, OnlineConfig::DEFAULT).map_err(drop)?;
    let mut x = [0.0f32; 64];
    for (i, v) in x.iter_mut().enumerate() {
        *v = black_box(i as f32 * 0.01);
    }
    online.learn(&x, 0).map_err(drop)?;
    let mut probs = [0.0f32; 10];
    let p = online.predict(&x, &mut probs).map_err(drop)?;
    let n = persist::encode(online.head(), Some(online.learner()), flash).map_err(drop)?;
    let (mut head, mut learner, _, _) = online.into_parts();
    persist::decode_into(&flash[..n], &mut head, Some(&mut learner)).map_err(drop)?;
    Ok(n + p.class)
}

#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    let _ = black_box(run());
    loop {}
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    loop {}
}
