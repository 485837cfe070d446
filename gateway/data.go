package gateway

import (
	"bytes"
	"errors"
	"io"
)

var errMessageTooLarge = errors.New("gateway: message exceeds the size limit")

// Decoder states. "Strict" line starts follow a real CRLF (or the DATA
// command itself); only there can a dot line end the data.
const (
	dsLineStrict  = iota // at the start of a line, after CRLF
	dsLineLoose          // at the start of a line, after a bare CR or LF
	dsText               // inside a line
	dsCR                 // after a CR, waiting to see whether LF follows
	dsDotStrict          // after a dot at a strict line start
	dsDotLoose           // after a dot at a loose line start
	dsDotCRStrict        // after CR LF "." CR
	dsDotCRLoose         // after a bare line end, "." and CR
	dsEnd                // <CR><LF>.<CR><LF> seen
)

// A dataReader decodes the DATA section of RFC 5321 section 4.1.1.4 from
// the connection's buffer, in bulk: it removes dot-stuffing (section
// 4.5.2), turns every line ending (CRLF, a bare CR, a bare LF) into CRLF,
// and returns io.EOF at <CR><LF>.<CR><LF>, and only there. A bare line end
// followed by a dot is text, so nothing a client sends can end the message
// early or smuggle a second one (CVE-2023-51764). Every input byte moves
// the state machine forward, so no byte sequence can stall it.
//
// Past limit bytes of output it returns errMessageTooLarge; drain then
// reads to the end of the data.
type dataReader struct {
	in    *connReader
	state int
	n     int64 // bytes produced
	limit int64
	err   error // sticky
}

func newDataReader(in *connReader, limit int64) *dataReader {
	return &dataReader{in: in, limit: limit}
}

// Read fills p with decoded message bytes. It returns io.EOF at the end of
// the data, errMessageTooLarge past the limit, or the connection's error.
func (d *dataReader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.decode(p)
	d.n += int64(n)
	if err == nil && d.n > d.limit {
		err = errMessageTooLarge
	}
	if err != nil {
		d.err = err
	}
	return n, err
}

// done reports whether the end of data was seen.
func (d *dataReader) done() bool { return d.state == dsEnd }

// drain reads and discards the rest of the data, to its end or to an error
// of the connection.
func (d *dataReader) drain() error {
	var scratch [4096]byte
	for d.state != dsEnd {
		if _, err := d.decode(scratch[:]); err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}

// decode is Read without the limit: it decodes input into p until p has
// no room for a line ending, the input buffer is empty after producing
// something, or the data ends.
func (d *dataReader) decode(p []byte) (int, error) {
	n := 0
	for n+3 <= len(p) { // room for a line ending and a dot
		if d.state == dsEnd {
			return n, io.EOF
		}
		in := d.in.buffered()
		if len(in) == 0 {
			if n > 0 {
				return n, nil
			}
			if err := d.in.fill(); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return n, err
			}
			continue
		}
		switch d.state {
		case dsText:
			seg := in
			if i := bytes.IndexByte(seg, '\n'); i >= 0 {
				seg = seg[:i]
			}
			if i := bytes.IndexByte(seg, '\r'); i >= 0 {
				seg = seg[:i]
			}
			m := copy(p[n:len(p)-2], seg)
			n += m
			d.in.consume(m)
			if m < len(seg) {
				return n, nil // p is full
			}
			if m == len(in) {
				continue
			}
			if in[m] == '\r' {
				d.state = dsCR
			} else { // a bare LF
				n += copy(p[n:], "\r\n")
				d.state = dsLineLoose
			}
			d.in.consume(1)
		case dsCR:
			n += copy(p[n:], "\r\n")
			if in[0] == '\n' {
				d.in.consume(1)
				d.state = dsLineStrict
			} else {
				d.state = dsLineLoose // a bare CR; in[0] is looked at again
			}
		case dsLineStrict, dsLineLoose:
			loose := d.state == dsLineLoose
			switch in[0] {
			case '.':
				d.in.consume(1)
				d.state = dsDotStrict
				if loose {
					d.state = dsDotLoose
				}
			default:
				d.state = dsText
			}
		case dsDotStrict, dsDotLoose:
			loose := d.state == dsDotLoose
			switch in[0] {
			case '\r':
				d.in.consume(1)
				d.state = dsDotCRStrict
				if loose {
					d.state = dsDotCRLoose
				}
			case '\n':
				// A lone dot ended by a bare LF: text, not the end.
				d.in.consume(1)
				n += copy(p[n:], ".\r\n")
				d.state = dsLineLoose
			default:
				// The dot was stuffing: drop it (RFC 5321 section 4.5.2).
				d.state = dsText
			}
		case dsDotCRStrict, dsDotCRLoose:
			if in[0] == '\n' && d.state == dsDotCRStrict {
				d.in.consume(1)
				d.state = dsEnd
				return n, io.EOF
			}
			// A lone dot line ended by a bare CR, or after a bare line
			// end: text.
			n += copy(p[n:], ".\r\n")
			if in[0] == '\n' {
				d.in.consume(1)
				d.state = dsLineStrict
			} else {
				d.state = dsLineLoose
			}
		}
	}
	return n, nil
}
