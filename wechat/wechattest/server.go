package wechattest

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server is a Sim listening on a loopback port, shaped like
// httptest.Server. Create it with NewServer and stop it with Close.
type Server struct {
	*Sim
	// URL is the base URL of the server, "http://127.0.0.1:port", with no
	// trailing slash: use it as the WeChat client's BaseURL.
	URL string

	srv       *http.Server
	done      chan struct{}
	closeOnce sync.Once
}

// NewServer starts a Sim configured by opts on 127.0.0.1 at a port the
// system picks. Like httptest.NewServer it panics when it cannot listen.
// The caller must Close it.
func NewServer(opts Options) *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("wechattest: failed to listen on a port: %v", err))
	}
	sim := New(opts)
	s := &Server{
		Sim: sim,
		URL: "http://" + ln.Addr().String(),
		srv: &http.Server{
			Handler:           sim,
			ReadHeaderTimeout: 10 * time.Second,
			// Dropped connections are deliberate; keep test output clean.
			ErrorLog: log.New(io.Discard, "", 0),
		},
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s
}

// Close stops the server: it closes the listener and every connection,
// which cancels requests in flight (a latency fault ends at once). Close is
// idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		_ = s.srv.Close()
		<-s.done
	})
}
