// Package redistest starts real redis-server and redis-sentinel processes for
// integration tests, on free loopback ports, and stops them when the test ends.
//
// A missing binary fails the test with a message that says how to install it;
// it never skips silently.
package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Server is one redis-server process. Its methods are safe for concurrent use.
type Server struct {
	// Addr is host:port on 127.0.0.1; it stays the same across Stop and Start.
	Addr string

	t    testing.TB
	bin  string
	dir  string
	args []string

	mu      sync.Mutex
	cmd     *proc
	started bool // Addr is fixed once the server has run
}

// Start starts a redis-server on a free loopback port with persistence off and
// registers its shutdown with t.Cleanup. Extra args are passed through
// ("--requirepass", "x").
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	bin := lookPath(t, "redis-server")
	s := &Server{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t))),
		t:    t,
		bin:  bin,
		dir:  t.TempDir(),
		args: args,
	}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start (re)starts a stopped server on the same address and waits until it
// answers PING.
func (s *Server) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	for attempt := 1; ; attempt++ {
		_, port, _ := net.SplitHostPort(s.Addr)
		args := append([]string{
			"--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
			"--dir", s.dir, "--protected-mode", "yes", "--daemonize", "no",
		}, s.args...)
		logPath := filepath.Join(s.dir, "redis.log")
		p := startProcess(s.t, s.bin, args, logPath)
		err := waitUp(s.Addr, password(s.args), logPath, p)
		if err == nil {
			s.cmd, s.started = p, true
			return
		}
		stopProcess(p)
		// The port FreePort found was taken before redis-server bound it
		// (parallel tests bind and dial loopback ports all the time): on
		// the first start, another free port will do.
		if errors.Is(err, errPortTaken) && !s.started && attempt < startAttempts {
			s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(s.t)))
			continue
		}
		s.t.Fatalf("redistest: redis-server: %v", err)
	}
}

// startAttempts is how many free ports a first start tries.
const startAttempts = 5

// Stop terminates the server and waits for it to exit. Stopping a stopped
// server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	stopProcess(s.cmd)
	s.cmd = nil
}

// Kill ends the server with SIGKILL, as a crash would (no shutdown, no
// waiting for replicas), and waits for it to exit. Start brings it back.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.cmd.Process.Kill()
	<-s.cmd.done
	s.cmd = nil
}

// Pause stops the process with SIGSTOP; Resume continues it.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server.
func (s *Server) Resume() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.cmd.Process.Signal(sig)
	}
}

// Client returns a client for this server, closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, Password: password(s.args)})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Sentinel is one redis-sentinel process watching a master.
type Sentinel struct {
	// Addr is the sentinel's host:port.
	Addr string
	cmd  *proc
}

// StartSentinel starts a redis-sentinel that monitors master under name, and
// waits until it knows the master. It stops with the test.
func StartSentinel(t testing.TB, master *Server, name string) *Sentinel {
	t.Helper()
	bin := lookPath(t, "redis-sentinel")
	dir := t.TempDir()
	host, mport, _ := net.SplitHostPort(master.Addr)
	logPath := filepath.Join(dir, "sentinel.log")
	var s *Sentinel
	for attempt := 1; s == nil; attempt++ {
		port := FreePort(t)
		conf := fmt.Sprintf("port %d\nbind 127.0.0.1\ndaemonize no\nprotected-mode no\ndir %s\n"+
			"sentinel monitor %s %s %s 1\nsentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 3000\n",
			port, dir, name, host, mport, name, name)
		if pw := password(master.args); pw != "" {
			conf += fmt.Sprintf("sentinel auth-pass %s %s\n", name, pw)
		}
		confPath := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			t.Fatalf("redistest: write sentinel config: %v", err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := startProcess(t, bin, []string{confPath}, logPath)
		err := waitUp(addr, "", logPath, cmd)
		switch {
		case err == nil:
			s = &Sentinel{Addr: addr, cmd: cmd}
			t.Cleanup(func() { stopProcess(cmd) })
		case errors.Is(err, errPortTaken) && attempt < startAttempts:
			stopProcess(cmd)
		default:
			stopProcess(cmd)
			t.Fatalf("redistest: redis-sentinel: %v", err)
		}
	}
	c := redis.NewSentinelClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		addr, err := c.GetMasterAddrByName(context.Background(), name).Result()
		if err == nil && len(addr) == 2 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("redistest: sentinel on %s does not know master %q: %v (log %s)", s.Addr, name, err, logPath)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func lookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("redistest: %s not found on PATH: run `make test`, it installs redis-server and redis-sentinel (apt-get install -y redis-server redis-sentinel)", name)
	}
	return p
}

// proc is a started process and a channel closed when it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProcess(t testing.TB, bin string, args []string, logPath string) *proc {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("redistest: create log: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Own process group, so a test killed mid-way does not leave it behind
	// attached to the terminal, and Pause/Resume reach only this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("redistest: start %s: %v", bin, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p
}

func stopProcess(p *proc) {
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// errPortTaken: the process exited because another one held its port.
var errPortTaken = errors.New("port already in use")

// upTimeout bounds how long a started process may take to answer: generous,
// as a loaded CI machine starts processes slowly.
const upTimeout = 30 * time.Second

// waitUp waits until p answers PING on addr as itself, or exits. Another
// server answering on the port (one that took it first) is not p: p will
// exit with errPortTaken.
func waitUp(addr, pw, logPath string, p *proc) error {
	c := redis.NewClient(&redis.Options{Addr: addr, Password: pw, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	deadline := time.Now().Add(upTimeout)
	for {
		select {
		case <-p.done:
			log := tail(logPath)
			if strings.Contains(log, "Address already in use") {
				return fmt.Errorf("%w: %s:\n%s", errPortTaken, addr, log)
			}
			return fmt.Errorf("exited before answering on %s:\n%s", addr, log)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		pid, err := serverPID(ctx, c)
		cancel()
		if err == nil && pid == p.cmd.Process.Pid {
			return nil
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = fmt.Errorf("answered by process %d", pid)
			}
			return fmt.Errorf("%s not answering PING as process %d after %s: %w:\n%s",
				addr, p.cmd.Process.Pid, upTimeout, err, tail(logPath))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// serverPID is the process_id the server on c's address reports.
func serverPID(ctx context.Context, c *redis.Client) (int, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return 0, fmt.Errorf("INFO server: %w", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO server: no process_id")
}

func password(args []string) string {
	for i, a := range args {
		if a == "--requirepass" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 20 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
