package api

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Audit events: which route read or touched a credential.
const (
	eventAccessToken  = "access_token"
	eventInvalidate   = "invalidate"
	eventTicket       = "ticket"
	eventJSSDK        = "jssdk_signature"
	eventCGIToken     = "cgi_token"
	eventCGIGetTicket = "cgi_getticket"
)

// Audit buffer: flushed when 256 KiB are pending, every second, and on Close.
const (
	auditBufferSize    = 256 << 10
	auditFlushInterval = time.Second
)

// newAuditLogger builds the default audit logger: JSON (or console) lines on
// w through a zapcore.BufferedWriteSyncer, so that a token read costs an
// in-memory append, never a write syscall. stop flushes and stops it.
func newAuditLogger(w io.Writer, format string) (log *zap.Logger, stop func() error) {
	ws := &zapcore.BufferedWriteSyncer{
		WS:            zapcore.AddSync(w),
		Size:          auditBufferSize,
		FlushInterval: auditFlushInterval,
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "console" {
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, ws, zapcore.InfoLevel)
	return zap.New(core).Named("audit"), ws.Stop
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
