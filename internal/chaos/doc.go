// Package chaos is wxbroker's chaos suite: it runs the built binary (three
// `wxbroker serve` processes and `wxbroker sim`) against real redis-server,
// redis-sentinel and Redis Cluster processes, injects process, Redis and
// WeChat faults, and checks every token the replicas serve against the
// simulator. Its tests carry the build tag `chaos` so that `go test ./...`
// skips them; `make chaos` runs them (docs/RELIABILITY.md has the method and
// the figures).
package chaos
