package wechattest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// pushTimeout is how long WeChat waits for an event URL to answer.
const pushTimeout = 5 * time.Second

// send delivers one push: POST the envelope to the event URL with
// signature, timestamp, nonce, encrypt_type=aes and msg_signature in the
// query, and count the outcome. A fault queued for "component_push" applies
// first: Drop skips the delivery (a missed push), Latency delays it; other
// fault fields do not apply to pushes.
func (s *Sim) send(ctx context.Context, componentAppID string, d *delivery) error {
	s.mu.Lock()
	f, faulted := s.takeFault(apiComponentEventPush)
	if faulted && f.Drop {
		if comp, ok := s.comps.byID[componentAppID]; ok {
			comp.dropped++
		}
		s.mu.Unlock()
		return nil
	}
	client := s.opts.PushClient
	s.mu.Unlock()

	if faulted && f.Latency > 0 {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("wechattest: push %s: %w", d.info, ctx.Err())
		}
	}
	err := deliver(ctx, client, d)
	s.mu.Lock()
	defer s.mu.Unlock()
	if comp, ok := s.comps.byID[componentAppID]; ok {
		if err != nil {
			comp.failed++
		} else {
			comp.delivered[d.info]++
		}
	}
	return err
}

func deliver(ctx context.Context, client *http.Client, d *delivery) error {
	u, err := url.Parse(d.url)
	if err != nil {
		return fmt.Errorf("wechattest: push %s: event URL: %w", d.info, err)
	}
	q := u.Query()
	q.Set("signature", d.sealed.Signature)
	q.Set("timestamp", d.sealed.Timestamp)
	q.Set("nonce", d.sealed.Nonce)
	q.Set("encrypt_type", "aes")
	q.Set("msg_signature", d.sealed.MsgSignature)
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithTimeout(ctx, pushTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(d.sealed.Body))
	if err != nil {
		return fmt.Errorf("wechattest: push %s: %w", d.info, err)
	}
	req.Header.Set("Content-Type", "text/xml")
	req.Header.Set("User-Agent", "Mozilla/4.0")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("wechattest: push %s: %w", d.info, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK || string(bytes.TrimSpace(body)) != "success" {
		return fmt.Errorf("wechattest: push %s: event URL answered %d %q; want 200 \"success\"", d.info, resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}
