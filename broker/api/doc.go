// Package api is wxbroker's internal HTTP API (docs/API.md), served on the
// listen address: token, ticket and JS-SDK signature reads, conditional
// invalidation, the two WeChat-compatible routes (/cgi-bin/token and
// /cgi-bin/ticket/getticket), the admin status, health, readiness and
// Prometheus metrics. Every other path goes to the WeChat API gateway
// (gateway.go): forwarded to WeChat with the app's current access token, and
// sent once more with a new token after a 40001/42001/40014.
//
// Reads are served from the broker's in-process cache. The read path is kept
// cheap on purpose: client keys and allow patterns come compiled from config
// (config.Access) and New indexes them by key digest,
// responses are encoded without reflection, metrics children are cached, and
// the per-read audit line is appended to an in-memory buffer that one
// goroutine writes out (at least every second), never one write syscall per
// read.
package api
