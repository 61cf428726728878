//! A sampling profile of this process (`perf` records nothing on the
//! machines we measure on): with `--features profile` and `REINS_PROFILE=FILE`,
//! stacks are sampled at 997 Hz and written as folded lines (`a;b;c COUNT`)
//! when the profile finishes. `reins serve` profiles its whole life; the
//! pipeline bench profiles its timed loops. Without the feature this is
//! nothing.

/// A running profile; `finish` writes it.
pub struct Profile {
    #[cfg(feature = "profile")]
    guard: Option<(pprof::ProfilerGuard<'static>, std::path::PathBuf)>,
}

/// Starts sampling when `REINS_PROFILE` names a file.
pub fn start() -> Profile {
    #[cfg(feature = "profile")]
    {
        let guard = std::env::var_os("REINS_PROFILE").and_then(|path| {
            match pprof::ProfilerGuardBuilder::default()
                .frequency(997)
                .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                .build()
            {
                Ok(g) => Some((g, std::path::PathBuf::from(path))),
                Err(e) => {
                    tracing::warn!(error = %e, "REINS_PROFILE: the profiler did not start");
                    None
                }
            }
        });
        Profile { guard }
    }
    #[cfg(not(feature = "profile"))]
    Profile {}
}

impl Profile {
    /// Writes the folded stacks to the file; a failure is logged, never fatal.
    pub fn finish(self) {
        #[cfg(feature = "profile")]
        if let Some((guard, path)) = self.guard {
            use std::fmt::Write;
            let report = match guard.report().build() {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "REINS_PROFILE: no report");
                    return;
                }
            };
            let mut out = String::new();
            for (frames, count) in &report.data {
                let mut stack: Vec<String> = vec![frames.thread_name.clone()];
                for frame in frames.frames.iter().rev() {
                    for symbol in frame.iter().rev() {
                        stack.push(symbol.name());
                    }
                }
                let _ = writeln!(out, "{} {count}", stack.join(";"));
            }
            if let Err(e) = std::fs::write(&path, out) {
                tracing::warn!(path = %path.display(), error = %e, "REINS_PROFILE: not written");
            }
        }
    }
}
