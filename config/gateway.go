package config

import (
	"fmt"
	"time"
)

// Gateway configures the WeChat API gateway on the internal listener: every
// request whose path is not one of the broker's own routes is forwarded to
// wechat.base_url with the app's current access token.
type Gateway struct {
	// Enabled turns the gateway on (default true). Off, unknown paths answer 404.
	Enabled bool `yaml:"enabled"`
	// MaxBodyBytes bounds a forwarded request body (media uploads); larger
	// bodies are refused. Default 10 MiB, WeChat's own limit for images and videos.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// RetryBodyBytes is the largest request body kept in memory so that the
	// request can be re-sent once after a 40001; larger bodies are streamed
	// and never re-sent. Default 1 MiB.
	RetryBodyBytes int64 `yaml:"retry_body_bytes"`
	// RetryMemoryBytes bounds the memory all requests in flight may hold for
	// re-sending together; a request that finds it used up streams without
	// a retry. Default 64 MiB.
	RetryMemoryBytes int64 `yaml:"retry_memory_bytes"`
	// Timeout bounds one gateway request, the caller's upload and the retry
	// included; the answer (errcode -1 when WeChat did not answer in time) is
	// written within GatewayAnswerTime after it. Longer than wechat.timeout.
	// Default 30s.
	Timeout time.Duration `yaml:"timeout"`
	// MaxConcurrent bounds the requests forwarded at once; more are answered
	// at once with errcode -1 (system busy). Default 1024.
	MaxConcurrent int `yaml:"max_concurrent"`
}

// GatewayAnswerTime is how long a gateway call may take beyond
// gateway.timeout to write its answer (errcode -1 when WeChat did not answer
// in time): the internal listener's read and write deadlines of a gateway
// call are gateway.timeout plus this, whatever its fixed ReadTimeout and
// WriteTimeout for the broker's own routes.
const GatewayAnswerTime = 5 * time.Second

// DefaultGateway returns the gateway defaults.
func DefaultGateway() Gateway {
	return Gateway{
		Enabled:          true,
		MaxBodyBytes:     10 << 20,
		RetryBodyBytes:   1 << 20,
		RetryMemoryBytes: 64 << 20,
		Timeout:          30 * time.Second,
		MaxConcurrent:    1024,
	}
}

func (v *validator) gateway(g *Gateway, wechatTimeout time.Duration) {
	if !g.Enabled {
		return
	}
	const fixBytes = "set a positive number of bytes, or leave it out for the default"
	if g.MaxBodyBytes < 1 {
		v.add("gateway.max_body_bytes", fmt.Sprint(g.MaxBodyBytes), "must be at least 1", fixBytes+" (10485760)")
	}
	if g.RetryBodyBytes < 0 {
		v.add("gateway.retry_body_bytes", fmt.Sprint(g.RetryBodyBytes), "is negative", "use 0 (never re-send a body) or a number of bytes (default 1048576)")
	} else if g.MaxBodyBytes > 0 && g.RetryBodyBytes > g.MaxBodyBytes {
		v.add("gateway.retry_body_bytes", fmt.Sprint(g.RetryBodyBytes),
			fmt.Sprintf("is larger than gateway.max_body_bytes (%d)", g.MaxBodyBytes), "lower it to at most max_body_bytes")
	}
	if g.RetryMemoryBytes < g.RetryBodyBytes && g.RetryBodyBytes >= 0 {
		v.add("gateway.retry_memory_bytes", fmt.Sprint(g.RetryMemoryBytes),
			fmt.Sprintf("is smaller than gateway.retry_body_bytes (%d)", g.RetryBodyBytes),
			"raise it (default 67108864) or lower retry_body_bytes")
	}
	if v.positive("gateway.timeout", g.Timeout) && wechatTimeout > 0 && g.Timeout <= wechatTimeout {
		v.add("gateway.timeout", g.Timeout.String(),
			fmt.Sprintf("must be longer than wechat.timeout (%s): a call met by 40001 waits for the new token, one WeChat call, before its one re-send", wechatTimeout),
			"raise gateway.timeout (default 30s) or lower wechat.timeout (default 5s)")
	}
	if g.MaxConcurrent < 1 {
		v.add("gateway.max_concurrent", fmt.Sprint(g.MaxConcurrent), "must be at least 1", "leave it out (default 1024) or set a positive number")
	}
}
