package redistest

import (
	"syscall"
	"testing"
)

// Process is any child process started by StartProcess: in its own process
// group, killed with the test and with the test binary (Pdeathsig), its
// stdout and stderr in a log file. Chaos tests use it for wxbroker processes.
type Process struct {
	p *proc
}

// StartProcess starts bin with args, logging to logPath, and registers its
// termination (SIGCONT, SIGTERM, then SIGKILL after 5 s) with t.Cleanup.
func StartProcess(t testing.TB, bin string, args []string, logPath string) *Process {
	t.Helper()
	p := &Process{p: startProcess(t, bin, args, logPath)}
	t.Cleanup(p.Stop)
	return p
}

// Signal sends sig to the process's whole group.
func (p *Process) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.p.cmd.Process.Pid, sig)
}

// Kill sends SIGKILL to the process group and waits for the process to exit.
func (p *Process) Kill() {
	_ = p.Signal(syscall.SIGKILL)
	<-p.p.done
}

// Stop terminates the process gracefully (SIGCONT, SIGTERM, SIGKILL after 5 s)
// and waits for it to exit. Stopping an exited process does nothing.
func (p *Process) Stop() { stopProcess(p.p) }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.p.done }

// Pid is the process id.
func (p *Process) Pid() int { return p.p.cmd.Process.Pid }
