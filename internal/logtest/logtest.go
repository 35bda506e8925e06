// Package logtest captures output that goroutines under test write while the
// test reads it: a zap core's log lines, or a running command's stdout and
// stderr.
package logtest

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that writers and readers may use at once. It is a
// zapcore.WriteSyncer, so it can back a zap core directly. Its methods are
// safe for concurrent use; the zero value is an empty buffer ready to use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p to the buffer. It never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Sync does nothing: the buffer holds everything written to it.
func (b *Buffer) Sync() error { return nil }

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
