// Package outbox is an upstream MTA for development and tests: a go-smtp
// server that keeps every message it accepts as an .eml file, written the
// Maildir way (into tmp/, then renamed into new/, so a reader never sees
// half a message), with the envelope in Return-Path and X-Envelope-To
// header fields on top.
package outbox

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// A Server accepts mail on its listeners and files it in a directory.
type Server struct {
	dir string
	srv *smtp.Server
	log *slog.Logger
}

// New returns a Server that files messages under dir, creating dir/tmp and
// dir/new if needed.
func New(dir, hostname string, log *slog.Logger) (*Server, error) {
	for _, sub := range []string{"tmp", "new"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("outbox: %w", err)
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{dir: dir, log: log}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &session{s: s}, nil }))
	s.srv.Domain = hostname
	s.srv.MaxMessageBytes = 64 << 20
	s.srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	return s, nil
}

// Serve accepts connections on l until Close.
func (s *Server) Serve(l net.Listener) error { return s.srv.Serve(l) }

// Close stops the server.
func (s *Server) Close() error {
	if err := s.srv.Close(); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
		return err
	}
	return nil
}

type session struct {
	s    *Server
	from string
	to   []string
}

func (ss *session) Reset()        { ss.from, ss.to = "", nil }
func (ss *session) Logout() error { return nil }
func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	ss.from = from
	return nil
}
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	id, err := ss.s.store(ss.from, ss.to, r)
	if err != nil {
		ss.s.log.Error("outbox: store message", "err", err)
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Cannot store the message"}
	}
	ss.s.log.Info("outbox: message stored", "id", id, "from", ss.from, "rcpts", ss.to)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: stored as " + id}
}

func (s *Server) store(from string, to []string, r io.Reader) (string, error) {
	id := fmt.Sprintf("%d.%s", time.Now().UnixNano(), strings.ToLower(rand.Text()[:8]))
	tmp := filepath.Join(s.dir, "tmp", id+".eml")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "Return-Path: <%s>\r\nX-Envelope-To: %s\r\n", from, strings.Join(to, ", "))
	_, err = io.Copy(w, r)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, "new", id+".eml"))
	}
	if err != nil {
		os.Remove(tmp)
		return "", err
	}
	return id, nil
}

// A Message is a filed message.
type Message struct {
	ID      string
	From    string // envelope sender
	To      string // envelope recipients, comma-separated
	Subject string
	Date    time.Time // when it was filed
	Size    int64
	Raw     []byte // the whole file, for Read only
}

// List returns the messages in dir, newest first.
func List(dir string) ([]Message, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []Message
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".eml")
		if !ok {
			continue
		}
		m, err := Read(dir, id)
		if err != nil {
			continue // removed meanwhile
		}
		m.Raw = nil
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Message) int { return b.Date.Compare(a.Date) })
	return out, nil
}

// Read returns one message. The id must be one List returned: anything
// else, such as a path, is not found.
func Read(dir, id string) (*Message, error) {
	if !validID(id) {
		return nil, os.ErrNotExist
	}
	path := filepath.Join(dir, "new", id+".eml")
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	m := &Message{ID: id, Date: fi.ModTime(), Size: int64(len(raw)), Raw: raw}
	if msg, err := mail.ReadMessage(bytes.NewReader(raw)); err == nil {
		m.From = strings.Trim(msg.Header.Get("Return-Path"), "<>")
		m.To = msg.Header.Get("X-Envelope-To")
		m.Subject = msg.Header.Get("Subject")
		if dec, err := new(mime.WordDecoder).DecodeHeader(m.Subject); err == nil {
			m.Subject = dec
		}
	}
	return m, nil
}

func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c == '.') {
			return false
		}
	}
	return !strings.Contains(id, "..")
}
