package gateway

import (
	"bytes"
	"errors"
	"io"
)

// Input buffer sizes. An idle connection holds only the small buffer; a
// long AUTH line grows it to the line's size for as long as the line is
// read, and DATA borrows a large pooled buffer for bulk reads.
const (
	smallBufSize = 1024
	dataBufSize  = 32 << 10
)

var errLineTooLong = errors.New("gateway: line too long")

// A connReader is the buffered input of one connection. Unlike bufio.Reader
// it lets a command line grow the buffer up to a per-command limit, lends
// its buffered bytes to the DATA decoder for bulk scanning, and calls
// beforeRead (which flushes pending replies and sets the read deadline)
// every time it is about to block.
type connReader struct {
	rd         io.Reader
	buf        []byte
	r, w       int
	err        error        // sticky read error, returned once buf is drained
	beforeRead func() error // called before each read from rd
	pool       interface {
		get() []byte
		put([]byte)
	}
	borrowed bool // buf came from pool
}

func (b *connReader) buffered() []byte { return b.buf[b.r:b.w] }

func (b *connReader) consume(n int) { b.r += n }

// fill reads at least one more byte into the buffer, or returns an error.
func (b *connReader) fill() error {
	if b.r > 0 {
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	if b.err != nil {
		return b.err
	}
	if b.w == len(b.buf) {
		panic("gateway: connReader.fill with a full buffer")
	}
	if b.beforeRead != nil {
		if err := b.beforeRead(); err != nil {
			return err
		}
	}
	for range 100 {
		n, err := b.rd.Read(b.buf[b.w:])
		b.w += n
		if err != nil {
			b.err = err
			if n > 0 {
				return nil
			}
			return err
		}
		if n > 0 {
			return nil
		}
	}
	b.err = io.ErrNoProgress
	return b.err
}

// resize moves the buffered bytes into a buffer of size n (at least what
// is buffered).
func (b *connReader) resize(n int) {
	nb := make([]byte, max(n, b.w-b.r))
	b.w = copy(nb, b.buf[b.r:b.w])
	b.r = 0
	b.release()
	b.buf = nb
}

// release returns a borrowed buffer to the pool.
func (b *connReader) release() {
	if b.borrowed {
		b.pool.put(b.buf)
		b.borrowed = false
	}
	b.buf = nil
}

// shrink goes back to the small buffer when what is buffered fits in it.
func (b *connReader) shrink() {
	if len(b.buf) > smallBufSize && b.w-b.r <= smallBufSize {
		b.resize(smallBufSize)
	}
}

// borrowLarge switches to a large pooled buffer for bulk reads (DATA).
func (b *connReader) borrowLarge() {
	if len(b.buf) >= dataBufSize {
		return
	}
	nb := b.pool.get()
	b.w = copy(nb, b.buf[b.r:b.w])
	b.r = 0
	b.release()
	b.buf, b.borrowed = nb, true
}

// readLine returns the next line without its line ending (CRLF, or a bare
// LF). limit gives the longest line allowed, ending included, for the
// line's first bytes; it is asked again as more of the line arrives. A
// longer line is read to its end, discarded whole, and reported as
// errLineTooLong: it is never returned in pieces. The returned slice is
// valid until the next read.
func (b *connReader) readLine(limit func(prefix []byte) int) ([]byte, error) {
	b.shrink()
	scanned := 0
	for {
		if i := bytes.IndexByte(b.buf[b.r+scanned:b.w], '\n'); i >= 0 {
			end := b.r + scanned + i + 1
			line := b.buf[b.r:end]
			b.r = end
			if len(line) > limit(line) {
				return nil, errLineTooLong
			}
			line = line[:len(line)-1]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return line, nil
		}
		scanned = b.w - b.r
		lim := limit(b.buf[b.r:b.w])
		if scanned >= lim {
			b.r = b.w
			if err := b.discardLine(); err != nil {
				return nil, err
			}
			return nil, errLineTooLong
		}
		if b.r == 0 && b.w == len(b.buf) {
			b.resize(min(grow(len(b.buf)), lim+1))
		}
		if err := b.fill(); err != nil {
			return nil, err
		}
	}
}

// grow is the next buffer size for a line that did not fit: double up to
// 4 KiB, then 4 KiB more each time, so a stalled partial AUTH line holds
// at most 4 KiB beyond its own length.
func grow(n int) int {
	if n < 4096 {
		return 2 * n
	}
	return n + 4096
}

// discardLine drops input up to and including the next LF.
func (b *connReader) discardLine() error {
	for {
		if i := bytes.IndexByte(b.buffered(), '\n'); i >= 0 {
			b.r += i + 1
			return nil
		}
		b.r = b.w
		if err := b.fill(); err != nil {
			return err
		}
	}
}

// discardBuffered drops whatever the client sent ahead (RFC 3207 section
// 4.2: nothing pipelined after STARTTLS survives it).
func (b *connReader) discardBuffered() { b.r = b.w }
