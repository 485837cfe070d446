package web

import (
	"log/slog"
	"net/http"
	"time"
)

// ServerLimits bound what one client can hold of an HTTP server. Zero
// fields take the defaults below.
type ServerLimits struct {
	ReadHeaderTimeout time.Duration // the request line and headers; default 10s
	ReadTimeout       time.Duration // the whole request, body included; default 30s
	WriteTimeout      time.Duration // from the end of the headers to the end of the response; default 60s
	IdleTimeout       time.Duration // a keep-alive connection between requests; default 60s
	MaxHeaderBytes    int           // default 64 KiB
	MaxBodyBytes      int64         // every request body is read through MaxBytesReader; default 1 MiB
}

// Defaults of ServerLimits.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxBodyBytes      = 1 << 20
)

// NewServer is the one constructor of every HTTP server smtpgate runs
// (the web app, the development provider): without its timeouts, idle
// keep-alive connections and requests whose body never comes would be
// held open for ever, and a body without end read for ever. The web app
// caps its forms lower still (64 KiB, see limitPosts).
func NewServer(h http.Handler, lim ServerLimits, log *slog.Logger) *http.Server {
	if lim.ReadHeaderTimeout == 0 {
		lim.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if lim.ReadTimeout == 0 {
		lim.ReadTimeout = DefaultReadTimeout
	}
	if lim.WriteTimeout == 0 {
		lim.WriteTimeout = DefaultWriteTimeout
	}
	if lim.IdleTimeout == 0 {
		lim.IdleTimeout = DefaultIdleTimeout
	}
	if lim.MaxHeaderBytes == 0 {
		lim.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if lim.MaxBodyBytes == 0 {
		lim.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           http.MaxBytesHandler(h, lim.MaxBodyBytes),
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}
