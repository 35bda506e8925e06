package main

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestRedisLoggerIsStructuredDebug(t *testing.T) {
	for _, tt := range []struct {
		level zapcore.Level
		want  int
	}{{zapcore.DebugLevel, 1}, {zapcore.InfoLevel, 0}} {
		core, logs := observer.New(tt.level)
		redisLogger{zap.New(core)}.Printf(t.Context(), "dial tcp %s: connection refused", "127.0.0.1:6379")
		if logs.Len() != tt.want {
			t.Fatalf("at %v: %d lines; want %d", tt.level, logs.Len(), tt.want)
		}
		if tt.want == 1 {
			e := logs.All()[0]
			if e.Message != "go-redis" || e.ContextMap()["detail"] != "dial tcp 127.0.0.1:6379: connection refused" {
				t.Fatalf("line = %q %v; want message go-redis with the formatted detail", e.Message, e.ContextMap())
			}
		}
	}
}
