//! The thread pool Outpost's own ops split their work over.
//!
//! A vision model is a chain of tens to hundreds of operators, many of them well
//! under a millisecond. A pool whose workers sleep between operators pays a wake-up
//! on each one: about 40 µs for a futex sleep-and-wake round trip on a shared VM,
//! which is as long as a small operator itself. So, like onnxruntime's pool:
//!
//! - the calling thread takes parts of the work itself, next to the helpers, and
//!   takes them all when the helpers are slow to come;
//! - helpers spin for a short while ([`SpinPool::spin`]) after each piece of work
//!   before they sleep, so that the next operator finds them awake;
//! - handing out a part is one compare-and-swap, and nothing is allocated.
//!
//! tract's own operators keep tract's rayon pool. The backend installs its pool
//! for the length of one inference with [`scope`]; ops ask for it through
//! [`threads`], [`run_parts`] and [`par_chunks_mut`], which run everything on the
//! calling thread when no pool is installed.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tract_onnx::prelude::{TractError, TractResult};

/// How long a helper spins for new work before it sleeps, unless
/// `OUTPOST_SPIN_US` says otherwise.
const DEFAULT_SPIN: Duration = Duration::from_micros(2000);

/// Pure spinning before a waiting thread starts to yield its core: long enough
/// for the gap between two operators, short enough not to starve tract's workers
/// or another process on a machine with few cores.
const SPIN_BEFORE_YIELD: Duration = Duration::from_micros(50);

/// The state word: the job's epoch, its number of parts, and the next part to
/// hand out. One word, so that a helper claims a part of exactly the job it saw.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Ticket(u64);

impl Ticket {
    /// Bits for each of `parts` and `next`; the epoch has the 32 left, and
    /// wraps (a helper only compares it with the one it last saw).
    const PART_BITS: u32 = 16;
    const PART_MASK: u64 = (1 << Self::PART_BITS) - 1;
    /// The most parts one job may have.
    const MAX_PARTS: usize = Self::PART_MASK as usize;

    fn new(epoch: u64, parts: usize, next: usize) -> Ticket {
        let epoch = epoch & (u64::MAX >> (2 * Self::PART_BITS));
        Ticket(epoch << (2 * Self::PART_BITS) | (parts as u64) << Self::PART_BITS | next as u64)
    }
    fn epoch(self) -> u64 {
        self.0 >> (2 * Self::PART_BITS)
    }
    /// The epoch of the job after this one, wrapped to the bits it has.
    fn next_epoch(self) -> u64 {
        (self.epoch() + 1) & (u64::MAX >> (2 * Self::PART_BITS))
    }
    fn parts(self) -> usize {
        ((self.0 >> Self::PART_BITS) & Self::PART_MASK) as usize
    }
    fn next(self) -> usize {
        (self.0 & Self::PART_MASK) as usize
    }
}

/// One call of [`SpinPool::run`]: the work and where a failure goes. It lives on
/// the caller's stack; helpers reach it only while holding an unfinished part,
/// and the caller does not return before every part is finished.
struct Job<'a> {
    part: &'a (dyn Fn(usize) -> TractResult<()> + Sync),
    failure: Mutex<Option<TractError>>,
}

/// What the caller and the helpers share.
struct Shared {
    ticket: AtomicU64,
    /// The current job, type-erased: a `*const Job` valid while a part is held.
    job: AtomicPtr<()>,
    /// Parts of the current job finished.
    done: AtomicUsize,
    /// Helpers asleep or about to sleep on `wake`.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicBool,
    spin: Duration,
}

/// A pool of `threads - 1` helper threads; the calling thread is the last one.
pub struct SpinPool {
    shared: Arc<Shared>,
    threads: usize,
    helpers: Vec<JoinHandle<()>>,
    /// Set while a caller runs in this pool; a second, concurrent caller runs
    /// alone rather than mixing its parts into the first one's.
    in_use: AtomicBool,
}

impl std::fmt::Debug for SpinPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpinPool")
            .field("threads", &self.threads)
            .field("spin", &self.shared.spin)
            .finish()
    }
}

impl SpinPool {
    /// A pool for `threads` threads in all (the caller included), whose helpers
    /// spin for `OUTPOST_SPIN_US` microseconds (default 2000) before sleeping.
    pub fn new(threads: usize) -> std::io::Result<SpinPool> {
        let spin = match std::env::var("OUTPOST_SPIN_US") {
            Ok(v) if !v.trim().is_empty() => v.trim().parse().map_or_else(
                |_| {
                    tracing::warn!(value = %v, "OUTPOST_SPIN_US is not a number of microseconds; using 2000");
                    DEFAULT_SPIN
                },
                Duration::from_micros,
            ),
            _ => DEFAULT_SPIN,
        };
        SpinPool::with_spin(threads, spin)
    }

    /// A pool whose helpers spin for `spin` before sleeping.
    pub fn with_spin(threads: usize, spin: Duration) -> std::io::Result<SpinPool> {
        let shared = Arc::new(Shared {
            ticket: AtomicU64::new(Ticket::new(0, 0, 0).0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            spin,
        });
        let mut pool = SpinPool {
            shared,
            threads: threads.max(1),
            helpers: Vec::new(),
            in_use: AtomicBool::new(false),
        };
        for i in 1..pool.threads {
            let shared = Arc::clone(&pool.shared);
            let handle = std::thread::Builder::new()
                .name(format!("outpost-{i}"))
                .spawn(move || helper(&shared))?;
            pool.helpers.push(handle);
        }
        Ok(pool)
    }

    /// Threads that work on a job, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `part(p)` for every `p` in `0..parts`, on the helpers and on the
    /// calling thread; returns the first failure. Panics in a part are failures.
    fn run(
        &self,
        parts: usize,
        part: &(dyn Fn(usize) -> TractResult<()> + Sync),
    ) -> TractResult<()> {
        if parts <= 1 || self.threads == 1 || parts > Ticket::MAX_PARTS {
            return (0..parts).try_for_each(part);
        }
        let s = &*self.shared;
        let job = Job {
            part,
            failure: Mutex::new(None),
        };
        let epoch = Ticket(s.ticket.load(Ordering::Relaxed)).next_epoch();
        s.done.store(0, Ordering::Relaxed);
        s.job
            .store(&job as *const Job as *mut (), Ordering::Relaxed);
        // SeqCst, paired with the helpers' `sleepers` increment: either a helper
        // sees this ticket before it sleeps, or this thread sees it sleeping.
        s.ticket
            .store(Ticket::new(epoch, parts, 0).0, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        // SAFETY: `job` outlives every part: this function waits for all of them.
        while let Some(p) = claim(s, epoch) {
            unsafe { run_part(s, &job, p) };
        }
        let mut waiter = Waiter::new();
        while s.done.load(Ordering::Acquire) < parts {
            waiter.pause();
        }
        match job.failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for SpinPool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        // A new epoch with no parts wakes spinning helpers.
        let epoch = Ticket(s.ticket.load(Ordering::Relaxed)).next_epoch();
        s.ticket.store(Ticket::new(epoch, 0, 0).0, Ordering::SeqCst);
        {
            let _guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        for handle in self.helpers.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Takes the next part of job `epoch`, if one is left.
fn claim(s: &Shared, epoch: u64) -> Option<usize> {
    let mut current = Ticket(s.ticket.load(Ordering::Acquire));
    loop {
        if current.epoch() != epoch || current.next() >= current.parts() {
            return None;
        }
        let taken = Ticket::new(epoch, current.parts(), current.next() + 1);
        match s.ticket.compare_exchange_weak(
            current.0,
            taken.0,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return Some(current.next()),
            Err(now) => current = Ticket(now),
        }
    }
}

/// Runs part `p` of `job` and counts it done.
///
/// # Safety
/// `p` was claimed from `job`'s epoch and is not yet counted done, so `job` is alive.
unsafe fn run_part(s: &Shared, job: &Job, p: usize) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.part)(p)))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|m| m.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a part of the work panicked".into());
            Err(TractError::msg(message))
        });
    if let Err(e) = result {
        let mut failure = job.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(e);
    }
    s.done.fetch_add(1, Ordering::Release);
}

/// A helper thread: waits for a new epoch, takes parts of it while any are left.
fn helper(s: &Shared) {
    // The pool's first epoch, not the current one: a helper that starts late
    // must still see the shutdown of a pool dropped before it ran.
    let mut seen = 0;
    loop {
        let epoch = wait_for_epoch(s, seen);
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = epoch;
        while let Some(p) = claim(s, epoch) {
            // SAFETY: the part was claimed from `epoch` and is not yet done, so
            // the caller is still inside `run` and `job` is the job of `epoch`
            // (stored before the ticket that published it).
            unsafe {
                let job = &*(s.job.load(Ordering::Acquire) as *const Job);
                run_part(s, job, p);
            }
        }
    }
}

/// Spins, then yields, then sleeps until the ticket's epoch differs from `seen`.
fn wait_for_epoch(s: &Shared, seen: u64) -> u64 {
    let started = Instant::now();
    let mut waiter = Waiter::new();
    loop {
        let epoch = Ticket(s.ticket.load(Ordering::Acquire)).epoch();
        if epoch != seen {
            return epoch;
        }
        if waiter.spins.is_multiple_of(256) && started.elapsed() > s.spin {
            break;
        }
        waiter.pause();
    }
    let mut guard = s.lock.lock().unwrap_or_else(|e| e.into_inner());
    s.sleepers.fetch_add(1, Ordering::SeqCst);
    loop {
        let epoch = Ticket(s.ticket.load(Ordering::SeqCst)).epoch();
        if epoch != seen || s.shutdown.load(Ordering::SeqCst) {
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            return epoch;
        }
        guard = s.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
    }
}

/// A busy-wait that spins first and yields the core once it has waited a while.
struct Waiter {
    started: Option<Instant>,
    spins: u32,
    yielding: bool,
}

impl Waiter {
    fn new() -> Waiter {
        Waiter {
            started: None,
            spins: 0,
            yielding: false,
        }
    }

    fn pause(&mut self) {
        self.spins = self.spins.wrapping_add(1);
        if self.yielding {
            std::thread::yield_now();
            return;
        }
        std::hint::spin_loop();
        if self.spins.is_multiple_of(64) {
            let started = *self.started.get_or_insert_with(Instant::now);
            self.yielding = started.elapsed() > SPIN_BEFORE_YIELD;
        }
    }
}

thread_local! {
    /// The pool installed on this thread by [`scope`].
    static CURRENT: Cell<*const SpinPool> = const { Cell::new(std::ptr::null()) };
}

/// Runs `f` with `pool` as this thread's pool for Outpost's ops. Without a pool,
/// or while another thread runs in the same pool, the ops run on this thread.
pub fn scope<R>(pool: Option<&SpinPool>, f: impl FnOnce() -> R) -> R {
    let pool = pool.filter(|p| {
        p.in_use
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    });
    struct Restore<'a>(*const SpinPool, Option<&'a SpinPool>);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            CURRENT.set(self.0);
            if let Some(pool) = self.1 {
                pool.in_use.store(false, Ordering::Release);
            }
        }
    }
    let previous = CURRENT.replace(pool.map_or(std::ptr::null(), |p| p as *const SpinPool));
    let _restore = Restore(previous, pool);
    f()
}

/// The pool [`scope`] installed on this thread.
fn current() -> Option<&'static SpinPool> {
    // SAFETY: `scope` installs the pointer for the length of a borrow of the pool
    // and removes it before that borrow ends; the `'static` never leaves this
    // module's functions, which all return before `scope` does.
    unsafe { CURRENT.get().as_ref() }
}

/// Threads the current pool has (1 without one).
pub fn threads() -> usize {
    current().map_or(1, SpinPool::threads)
}

/// Products smaller than this many multiply-adds run on the calling thread:
/// below it, handing out parts costs more than it saves.
pub(crate) const PARALLEL_MACS: usize = 1 << 20;

/// Threads a product of `macs` multiply-adds should be split over: the current
/// pool's, or 1 for a small product.
pub fn threads_for_product(macs: usize) -> usize {
    match macs >= PARALLEL_MACS {
        true => threads(),
        false => 1,
    }
}

/// Runs `part(p)` for every `p` in `0..parts`, over the current pool when there
/// is one; returns the first failure.
pub fn run_parts(parts: usize, part: impl Fn(usize) -> TractResult<()> + Sync) -> TractResult<()> {
    match current() {
        Some(pool) if parts > 1 => {
            // A part that splits its work again runs it on its own thread: the
            // pool holds one job at a time. Helpers have no pool installed.
            struct Reinstall(*const SpinPool);
            impl Drop for Reinstall {
                fn drop(&mut self) {
                    CURRENT.set(self.0);
                }
            }
            let _reinstall = Reinstall(CURRENT.replace(std::ptr::null()));
            pool.run(parts, &part)
        }
        _ => (0..parts).try_for_each(part),
    }
}

/// Calls `f(first_row, rows)` on blocks of whole rows of `out` (rows of
/// `row_len` values; the last block also takes a trailing partial row), in
/// parallel when there is a pool and the work (`work`, in values touched) is
/// worth it.
pub fn par_chunks_mut<T: Send>(
    out: &mut [T],
    row_len: usize,
    work: usize,
    f: impl Fn(usize, &mut [T]) -> TractResult<()> + Sync,
) -> TractResult<()> {
    /// Below this much work, waking a helper costs more than it saves.
    const PARALLEL_WORK: usize = 1 << 15;
    let rows = out.len() / row_len.max(1);
    let threads = threads();
    if threads == 1 || rows < 2 || work < PARALLEL_WORK {
        return f(0, out);
    }
    // Twice the threads, so that a late helper costs half a share, not a whole one.
    let parts = (2 * threads).min(rows);
    let (base, len) = (SharedOutput(out.as_mut_ptr()), out.len());
    run_parts(parts, |p| {
        let block = rows * p / parts..rows * (p + 1) / parts;
        let end = match p + 1 == parts {
            true => len,
            false => block.end * row_len,
        };
        // SAFETY: the parts' ranges are disjoint and inside `out`.
        let chunk = unsafe {
            std::slice::from_raw_parts_mut(
                base.get().add(block.start * row_len),
                end - block.start * row_len,
            )
        };
        f(block.start, chunk)
    })
}

/// An output that the parts of one job share, each writing its own block.
#[derive(Clone, Copy)]
pub(crate) struct SharedOutput<P: Copy = *mut f32>(pub(crate) P);

// SAFETY: each part writes its own block (see the users: `par_chunks_mut`,
// `GemmConv::part`, `QGemmConv::part`, `DirectConv`).
unsafe impl<P: Copy> Send for SharedOutput<P> {}
unsafe impl<P: Copy> Sync for SharedOutput<P> {}

impl<P: Copy> SharedOutput<P> {
    /// The pointer; a method, so that closures capture the whole (Send) wrapper.
    pub(crate) fn get(self) -> P {
        self.0
    }
}

/// Runs `f` with a pool of `threads` threads installed for Outpost's ops and a
/// rayon pool of as many for tract's: the set-up ops' tests compare thread counts in.
#[cfg(test)]
pub(crate) fn with_threads<R>(threads: usize, f: impl FnOnce() -> R) -> R {
    use tract_onnx::tract_core::tract_linalg::multithread::{multithread_tract_scope, Executor};
    let pool = SpinPool::new(threads).expect("spawn helpers");
    multithread_tract_scope(Executor::multithread(threads), || scope(Some(&pool), f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_part_runs_once_on_every_pool_size() {
        for threads in 1..=4 {
            let pool = SpinPool::with_spin(threads, Duration::from_micros(100)).unwrap();
            scope(Some(&pool), || {
                for parts in [0, 1, 2, 3, 7, 64, 1000] {
                    let hits: Vec<AtomicU32> = (0..parts).map(|_| AtomicU32::new(0)).collect();
                    run_parts(parts, |p| {
                        hits[p].fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    })
                    .unwrap();
                    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                }
            });
        }
    }

    #[test]
    fn tickets_keep_their_fields_and_epochs_wrap() {
        let t = Ticket::new(7, Ticket::MAX_PARTS, 12);
        assert_eq!((t.epoch(), t.parts(), t.next()), (7, Ticket::MAX_PARTS, 12));
        let last = Ticket::new(u64::from(u32::MAX), 3, 0);
        assert_eq!(last.epoch(), u64::from(u32::MAX));
        assert_eq!(last.next_epoch(), 0);
        let wrapped = Ticket::new(last.next_epoch(), 3, 1);
        assert_eq!(
            (wrapped.epoch(), wrapped.parts(), wrapped.next()),
            (0, 3, 1)
        );
    }

    #[test]
    fn jobs_run_across_the_epoch_wrap() {
        let pool = SpinPool::with_spin(2, Duration::from_micros(100)).unwrap();
        let last = Ticket::new(u64::from(u32::MAX) - 2, 0, 0);
        pool.shared.ticket.store(last.0, Ordering::SeqCst);
        scope(Some(&pool), || {
            for _ in 0..6 {
                let hits: Vec<AtomicU32> = (0..16).map(|_| AtomicU32::new(0)).collect();
                run_parts(16, |p| {
                    hits[p].fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
                .unwrap();
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        });
        assert_eq!(Ticket(pool.shared.ticket.load(Ordering::SeqCst)).epoch(), 3);
    }

    #[test]
    fn pools_dropped_at_once_shut_down() {
        // Helpers that have not started yet when the pool is dropped still stop.
        for threads in [2, 4] {
            for _ in 0..100 {
                drop(SpinPool::with_spin(threads, Duration::from_micros(100)).unwrap());
            }
        }
    }

    #[test]
    fn helpers_that_slept_wake_for_the_next_job() {
        let pool = SpinPool::with_spin(3, Duration::ZERO).unwrap();
        let seen = Mutex::new(std::collections::HashSet::new());
        scope(Some(&pool), || {
            for _ in 0..50 {
                std::thread::sleep(Duration::from_millis(1));
                run_parts(64, |_| {
                    seen.lock().unwrap().insert(std::thread::current().id());
                    std::thread::sleep(Duration::from_micros(200));
                    Ok(())
                })
                .unwrap();
            }
        });
        // 64 parts of 200 µs each: the sleeping helpers were woken and took some.
        assert!(seen.into_inner().unwrap().len() > 1);
    }

    #[test]
    fn failures_and_panics_come_back_as_errors() {
        let pool = SpinPool::with_spin(2, Duration::from_micros(100)).unwrap();
        scope(Some(&pool), || {
            let failed = run_parts(8, |p| match p {
                5 => Err(TractError::msg("part five failed")),
                _ => Ok(()),
            });
            assert!(format!("{:?}", failed.unwrap_err()).contains("part five failed"));
            let panicked = run_parts(8, |p| {
                assert!(p != 3, "part three panicked");
                Ok(())
            });
            assert!(format!("{:?}", panicked.unwrap_err()).contains("part three panicked"));
            // The pool still works afterwards.
            let count = AtomicU32::new(0);
            run_parts(8, |_| {
                count.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
            assert_eq!(count.into_inner(), 8);
        });
    }

    #[test]
    fn concurrent_callers_of_one_pool_each_get_all_their_parts() {
        let pool = SpinPool::with_spin(2, Duration::from_micros(100)).unwrap();
        std::thread::scope(|threads| {
            for caller in 0..3u32 {
                let pool = &pool;
                threads.spawn(move || {
                    for _ in 0..200 {
                        let mut out = vec![0u32; 4096];
                        scope(Some(pool), || {
                            par_chunks_mut(&mut out, 64, 1 << 20, |first, rows| {
                                for (i, row) in rows.chunks_exact_mut(64).enumerate() {
                                    row.fill(caller * 1000 + (first + i) as u32);
                                }
                                Ok(())
                            })
                        })
                        .unwrap();
                        for (i, row) in out.chunks_exact(64).enumerate() {
                            assert!(row.iter().all(|&v| v == caller * 1000 + i as u32));
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn parts_that_split_again_run_their_inner_parts_alone() {
        let pool = SpinPool::with_spin(2, Duration::from_micros(100)).unwrap();
        let count = AtomicU32::new(0);
        scope(Some(&pool), || {
            run_parts(4, |_| {
                let me = std::thread::current().id();
                run_parts(3, |_| {
                    assert_eq!(std::thread::current().id(), me);
                    count.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                })
            })
            .unwrap();
            // The pool is installed again afterwards.
            assert_eq!(threads(), 2);
        });
        assert_eq!(count.into_inner(), 12);
    }

    /// Every value is handed out once, at its place, trailing partial row included.
    #[test]
    fn chunks_cover_every_value_once() {
        for threads in [1, 2, 3] {
            for (len, row_len) in [(1037, 100), (1000, 100), (5, 2), (99_999, 4096)] {
                let mut out = vec![0u32; len];
                with_threads(threads, || {
                    par_chunks_mut(&mut out, row_len, 1 << 20, |first, rows| {
                        for (i, v) in rows.iter_mut().enumerate() {
                            *v += (first * row_len + i) as u32 + 1;
                        }
                        Ok(())
                    })
                })
                .unwrap();
                let want: Vec<u32> = (1..=len as u32).collect();
                assert!(out == want, "threads {threads} len {len} rows of {row_len}");
            }
        }
    }

    #[test]
    fn without_a_pool_everything_runs_on_the_caller() {
        let me = std::thread::current().id();
        run_parts(4, |_| {
            assert_eq!(std::thread::current().id(), me);
            Ok(())
        })
        .unwrap();
        let mut out = vec![0u8; 100];
        par_chunks_mut(&mut out, 10, 1 << 20, |first, rows| {
            assert_eq!((first, rows.len()), (0, 100));
            Ok(())
        })
        .unwrap();
    }
}
