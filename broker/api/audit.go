package api

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Audit events: which route read or touched a credential.
const (
	eventAccessToken  = "access_token"
	eventInvalidate   = "invalidate"
	eventTicket       = "ticket"
	eventJSSDK        = "jssdk_signature"
	eventCGIToken     = "cgi_token"
	eventCGIGetTicket = "cgi_getticket"
	// eventCGIStableToken is POST /cgi-bin/stable_token.
	eventCGIStableToken = "cgi_stable_token"
)

// Audit buffer: the flusher is woken when auditBufferSize bytes are pending,
// and writes at least every auditFlushInterval and on Close. A writer that
// finds auditBufferMax bytes pending waits for the flusher (backpressure:
// memory stays bounded and no line is dropped).
const (
	auditBufferSize    = 256 << 10
	auditBufferMax     = 1 << 20
	auditFlushInterval = time.Second
	auditMessage       = "credential request"
)

// auditLog is the default audit log: one line per credential request, encoded
// like zap's production JSON (or console) encoder would encode
//
//	audit.Info("credential request", zap.String("event", ...), ...)
//
// but by hand into one shared buffer. A read costs an append under a mutex
// (no allocation, no reflection, no write syscall); one goroutine writes the
// buffer out in large chunks. This is the "buffered logger core" the token-read targets
// (docs/BENCHMARKS.md) need:
// zap's own encoder spent about 1 µs per line on field and timestamp
// encoding, half the API's cost per read. Its methods are safe for
// concurrent use.
type auditLog struct {
	w       io.Writer
	console bool

	mu      sync.Mutex
	space   sync.Cond // broadcast when buf has been handed to the flusher
	buf     []byte
	sec     int64  // unix second that stamp holds
	stamp   []byte // "2006-01-02T15:04:05" of sec, local time
	zone    []byte // "Z" or "-0700" of sec
	stopped bool   // Close has run: write through at once
	err     error  // first write error

	kick  chan struct{}
	stopc chan struct{}
	done  chan struct{}
}

// newAuditLog starts an audit log on w and its flusher; stop flushes and
// stops it.
func newAuditLog(w io.Writer, format string) *auditLog {
	l := &auditLog{
		w:       w,
		console: format == "console",
		buf:     make([]byte, 0, auditBufferSize+auditBufferSize/4),
		sec:     -1,
		kick:    make(chan struct{}, 1),
		stopc:   make(chan struct{}),
		done:    make(chan struct{}),
	}
	l.space.L = &l.mu
	go l.flushLoop(make([]byte, 0, cap(l.buf)))
	return l
}

// flushLoop swaps the filled buffer for an empty one and writes it outside
// the lock, so that writers keep appending while the write runs.
func (l *auditLog) flushLoop(out []byte) {
	defer close(l.done)
	tick := time.NewTicker(auditFlushInterval)
	defer tick.Stop()
	for {
		stop := false
		select {
		case <-tick.C:
		case <-l.kick:
		case <-l.stopc:
			stop = true
		}
		l.mu.Lock()
		out, l.buf = l.buf, out[:0]
		l.space.Broadcast()
		if stop {
			// Write the rest under the lock: from now on writers write
			// through themselves, after this.
			l.stopped = true
			l.writeOut(out)
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		if len(out) > 0 {
			_, err := l.w.Write(out)
			if err != nil {
				l.mu.Lock()
				if l.err == nil {
					l.err = err
				}
				l.mu.Unlock()
			}
		}
	}
}

// writeOut writes p and keeps the first error; the caller holds mu.
func (l *auditLog) writeOut(p []byte) {
	if len(p) == 0 {
		return
	}
	if _, err := l.w.Write(p); err != nil && l.err == nil {
		l.err = err
	}
}

// stop flushes what is pending, stops the flusher and returns the first write
// error. Lines written afterwards go straight to the writer.
func (l *auditLog) stop() error {
	select {
	case <-l.stopc:
	default:
		close(l.stopc)
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// line appends one audit line. ns, appid and remote come from the request
// and are bounded (appendBounded); event, client, result and ref do not.
func (l *auditLog) line(now time.Time, event, client, ns, appid, result, ref, remote string) {
	l.mu.Lock()
	b := l.appendTime(l.waitSpace(), now)
	b = l.appendFields(b, event, client, ns, appid, result)
	l.finish(b, ref, remote)
}

// linePrefixed is line with the fields from event to result already encoded
// by appendFields (fields): a token read memoizes them per client and app
// (tokens.go), so that its line costs the time stamp and two short values.
func (l *auditLog) linePrefixed(now time.Time, fields []byte, ref, remote string) {
	l.mu.Lock()
	b := l.appendTime(l.waitSpace(), now)
	b = append(b, fields...)
	l.finish(b, ref, remote)
}

// waitSpace waits until the buffer has room and returns it; the caller holds
// mu.
func (l *auditLog) waitSpace() []byte {
	for !l.stopped && len(l.buf) >= auditBufferMax {
		l.space.Wait()
	}
	return l.buf
}

// appendFields appends the part of a line between its time stamp and the
// value of token_sha256: level, logger, message, event, client, namespace,
// appid, result and the token_sha256 key. It reads only l.console, which
// never changes, so it may run without mu.
func (l *auditLog) appendFields(b []byte, event, client, ns, appid, result string) []byte {
	if l.console {
		b = append(b, "\tINFO\taudit\t"+auditMessage+"\t{\"event\": "...)
		b = appendString(b, event)
		b = append(b, `, "client": `...)
		b = appendString(b, client)
		b = append(b, `, "namespace": `...)
		b = appendBounded(b, ns)
		b = append(b, `, "appid": `...)
		b = appendBounded(b, appid)
		b = append(b, `, "result": `...)
		b = appendString(b, result)
		return append(b, `, "token_sha256": `...)
	}
	b = append(b, `","logger":"audit","msg":"`+auditMessage+`","event":`...)
	b = appendString(b, event)
	b = append(b, `,"client":`...)
	b = appendString(b, client)
	b = append(b, `,"namespace":`...)
	b = appendBounded(b, ns)
	b = append(b, `,"appid":`...)
	b = appendBounded(b, appid)
	b = append(b, `,"result":`...)
	b = appendString(b, result)
	return append(b, `,"token_sha256":`...)
}

// finish appends the token reference and the remote address, ends the line,
// hands a full buffer to the flusher and releases mu, which the caller holds.
func (l *auditLog) finish(b []byte, ref, remote string) {
	b = appendString(b, ref)
	if l.console {
		b = append(b, `, "remote": `...)
	} else {
		b = append(b, `,"remote":`...)
	}
	b = appendBounded(b, remote)
	b = append(b, "}\n"...)
	l.buf = b
	switch {
	case l.stopped:
		l.writeOut(l.buf)
		l.buf = l.buf[:0]
	case len(l.buf) >= auditBufferSize:
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	l.mu.Unlock()
}

// appendTime appends the line's start up to the milliseconds' zone: for JSON
// `{"level":"info","ts":"2006-01-02T15:04:05.000Z0700` (zap's ISO 8601), for
// the console `2006-01-02T15:04:05.000Z0700`. The part up to the second is
// formatted once per second. The caller holds mu.
func (l *auditLog) appendTime(b []byte, now time.Time) []byte {
	if s := now.Unix(); s != l.sec {
		l.sec = s
		l.stamp = now.AppendFormat(l.stamp[:0], "2006-01-02T15:04:05")
		l.zone = now.AppendFormat(l.zone[:0], "Z0700")
	}
	if !l.console {
		b = append(b, `{"level":"info","ts":"`...)
	}
	b = append(b, l.stamp...)
	ms := now.Nanosecond() / int(time.Millisecond)
	b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(b, l.zone...)
}

// auditor writes audit lines to the default auditLog or to a caller's
// *zap.Logger.
type auditor struct {
	log *auditLog   // default
	zap *zap.Logger // Options.AuditLogger
}

func (a auditor) line(now time.Time, event, client, ns, appid, result, ref, remote string) {
	if a.log != nil {
		a.log.line(now, event, client, ns, appid, result, ref, remote)
		return
	}
	a.zap.Info(auditMessage,
		zap.String("event", event),
		zap.String("client", client),
		zap.String("namespace", bounded(ns)),
		zap.String("appid", bounded(appid)),
		zap.String("result", result),
		zap.String("token_sha256", ref),
		zap.String("remote", bounded(remote)),
	)
}

// tokenRef identifies a credential in the audit log without revealing it: the
// first 8 hex digits of its SHA-256 (32 bits, enough to tell tokens apart in
// a log, far too few to help guess one).
func tokenRef(token string) string {
	if token == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(token))
	var dst [8]byte
	hex.Encode(dst[:], sum[:4])
	return string(dst[:])
}
