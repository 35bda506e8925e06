package broker

import (
	"os"
	"testing"
)

// TestMain runs the test binary as the simulator's child process when simEnv
// is set (BenchmarkTenThousandApps measures the broker's CPU apart from the
// simulator's: tenthousand_bench_test.go), and as the tests otherwise.
func TestMain(m *testing.M) {
	if spec := os.Getenv(simEnv); spec != "" {
		os.Exit(runSimProcess(spec))
	}
	os.Exit(m.Run())
}
