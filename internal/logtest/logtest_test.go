package logtest_test

import (
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/wxbroker/wxbroker/internal/logtest"
)

// TestBufferConcurrent is meant for -race: a zap logger writes from several
// goroutines while the test reads.
func TestBufferConcurrent(t *testing.T) {
	var buf logtest.Buffer
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), &buf, zap.InfoLevel))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				log.Info("hello")
				_ = buf.String()
			}
		})
	}
	wg.Wait()
	if err := log.Sync(); err != nil {
		t.Fatalf("Sync() = %v; want nil", err)
	}
	if got := strings.Count(buf.String(), `"msg":"hello"`); got != 200 {
		t.Fatalf("buffer holds %d log lines; want 200", got)
	}
}
