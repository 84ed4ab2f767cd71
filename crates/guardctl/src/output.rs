//! Where guardctl's output goes. A reader that stops reading
//! (`guardctl status | head -1`, `guardctl ports | grep -q web`) ends the
//! output quietly, as it does for `ls | head`: `println!` would panic on
//! the broken pipe and exit 101 with a backtrace hint on stderr.

use std::io::{self, Write};

/// Standard output, which stops writing once its reader is gone. The
/// command still runs to its end and exits with its own status; any other
/// write error (a full disk) is an error.
pub struct Output<W> {
    inner: W,
    reader_gone: bool,
}

impl<W: Write> Output<W> {
    pub fn new(inner: W) -> Self {
        Output {
            inner,
            reader_gone: false,
        }
    }

    fn unless_gone(&mut self, result: io::Result<()>) -> io::Result<()> {
        match result {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.reader_gone = true;
                Ok(())
            }
            other => other,
        }
    }
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.reader_gone {
            let result = self.inner.write_all(buf);
            self.unless_gone(result)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.reader_gone {
            return Ok(());
        }
        let result = self.inner.flush();
        self.unless_gone(result)
    }
}

/// A line on standard error; nothing if nobody reads it (`eprintln!`
/// would panic).
pub fn say(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader went away after `room` bytes.
    struct Pipe {
        written: Vec<u8>,
        room: usize,
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written.len() >= self.room {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.room - self.written.len());
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_gone_reader_ends_the_output_without_an_error() {
        let mut out = Output::new(Pipe {
            written: Vec::new(),
            room: 4,
        });
        assert!(writeln!(out, "first line").is_ok());
        assert!(writeln!(out, "second line").is_ok());
        assert!(out.flush().is_ok());
        assert_eq!(out.inner.written, b"firs");
    }

    #[test]
    fn other_errors_are_errors() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        assert!(writeln!(Output::new(Full), "x").is_err());
    }
}
