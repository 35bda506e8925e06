package redistest

import (
	"net"
	"testing"
)

// TestFirstStartOnTakenPortMovesOn: when the port FreePort found is taken
// before redis-server binds it (by a listener, or by another test's
// redis-server that would answer PING in its place), the first start picks
// another port and the server that answers is the one started.
func TestFirstStartOnTakenPortMovesOn(t *testing.T) {
	other := Start(t) // a redis-server holding a port: PING answers there
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, taken := range []string{other.Addr, l.Addr().String()} {
		s := &Server{Addr: taken, t: t, bin: lookPath(t, "redis-server"), dir: t.TempDir()}
		s.Start()
		t.Cleanup(s.Stop)
		if s.Addr == taken {
			t.Fatalf("started on the taken address %s", taken)
		}
		c := s.Client(t)
		pid, err := serverPID(t.Context(), c)
		if err != nil || pid != s.cmd.cmd.Process.Pid {
			t.Errorf("server on %s is process %d, %v; want the started one, %d", s.Addr, pid, err, s.cmd.cmd.Process.Pid)
		}
	}
}
