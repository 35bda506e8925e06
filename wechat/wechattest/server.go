package wechattest

import (
	"context"
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

	srv        *http.Server
	done       chan struct{}
	stopPushes context.CancelFunc
	pushesDone chan struct{}
	mu         sync.Mutex // guards closing and inflight.Add
	closing    bool
	inflight   sync.WaitGroup
	closeOnce  sync.Once
}

// NewServer starts a Sim configured by opts on 127.0.0.1 at a port the
// system picks, with a RunPushes loop for the components' event URLs.
// Like httptest.NewServer it panics when it cannot listen. The caller must
// Close it.
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
			ReadHeaderTimeout: 10 * time.Second,
			// Dropped connections are deliberate; keep test output clean.
			ErrorLog: log.New(io.Discard, "", 0),
		},
		done: make(chan struct{}),
	}
	s.srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			dropConnection(w)
			return
		}
		s.inflight.Add(1)
		s.mu.Unlock()
		defer s.inflight.Done()
		sim.ServeHTTP(w, r)
	})
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	ctx, cancel := context.WithCancel(context.Background())
	s.stopPushes, s.pushesDone = cancel, make(chan struct{})
	go func() {
		defer close(s.pushesDone)
		sim.RunPushes(ctx)
	}()
	return s
}

// Close stops the server: it closes the listener and every connection,
// which cancels requests in flight (a latency fault ends at once), stops
// the pushes to event URLs, and waits until their handlers and pushes have
// returned. Close is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		_ = s.srv.Close()
		s.stopPushes()
		<-s.done
		<-s.pushesDone
		s.inflight.Wait()
	})
}
