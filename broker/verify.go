package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

// errStillAccepted is refreshIfCurrent's answer to an unproven report of a
// token that WeChat still accepts: no refresh was made.
var errStillAccepted = errors.New("broker: wechat still accepts the reported token")

// verdictReuseDefault is how long before a report a "still accepted"
// verdict on its token may have been reached and still answer it without a
// new check (Broker.verdictReuse). A burst of reports is not simultaneous:
// under load it spreads over more than one check's duration, and every
// straggler would otherwise cost another check. A token killed within this
// time after a check stays defended until the time passes.
const verdictReuseDefault = time.Second

// verifyReport checks an unproven report of failed, the current token of
// k's item, with one side-effect-free WeChat call. The caller holds k's
// lock and has found no verdict that answers the report (stillAccepted), so
// concurrent reports on the leader (local or forwarded from any replica)
// queue behind one check, and every report made before a "still accepted"
// verdict was reached, or at most verdictReuse after it, shares it: a
// burst of 1000 costs one check. A later report gets a check of its own.
// It returns errStillAccepted when WeChat accepts the token, nil when
// WeChat rejects it or, unless confirm is set, cannot tell (then the
// report is trusted: the force budget still bounds what it costs),
// ErrNotConfirmed when confirm is set and WeChat cannot tell, or ctx's
// error.
func (b *refresher) verifyReport(ctx context.Context, k *task, failed string, confirm bool) error {
	it := k.it
	cctx, cancel := context.WithTimeout(ctx, b.cfg.WeChat.Timeout)
	_, err := b.wx.APIDomainIP(cctx, failed)
	cancel()
	if err == nil {
		it.verdict.Store(&verdict{token: failed, at: time.Now()})
		b.log.Info("reported token is still accepted by wechat; not refreshing it",
			append(itemFields(it), zapTok(failed))...)
		return errStillAccepted
	}
	if ctx.Err() != nil {
		return fmt.Errorf("check the reported token: %w", context.Cause(ctx))
	}
	var ae *wechat.APIError
	if errors.As(err, &ae) && ae.InvalidCredential() {
		return nil
	}
	code := -2
	if ae != nil {
		code = ae.Code
	}
	b.m.WeChatErrors.WithLabelValues(it.ns, it.label(), wechat.APIDomainIP, metrics.ErrcodeLabel(code)).Inc()
	if confirm {
		b.log.Warn("cannot check the reported token with wechat; not refreshing it on an unconfirmed report",
			append(itemFields(it), zapTok(failed), zapErr(err))...)
		return ErrNotConfirmed
	}
	b.log.Warn("cannot check the reported token with wechat; trusting the report",
		append(itemFields(it), zapTok(failed), zapErr(err))...)
	return nil
}

// stillAccepted reports whether a verdict on failed answers a report of it
// made at since: one reached after the report was made, or at most
// verdictReuse before.
func stillAccepted(it *item, failed string, since time.Time, reuse time.Duration) bool {
	v := it.verdict.Load()
	return v != nil && v.token == failed && !v.at.Before(since.Add(-reuse))
}
