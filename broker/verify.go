package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/wxbroker/wxbroker/metrics"
	"github.com/wxbroker/wxbroker/wechat"
)

// errStillAccepted is leaderInvalidate's answer to an unproven report of a
// token that WeChat still accepts: no refresh was made.
var errStillAccepted = errors.New("broker: wechat still accepts the reported token")

// falseReportReuse is how long WeChat's "still accepted" verdict on a
// reported token answers further reports of that token without a new check.
// It absorbs a burst (1000 confused callers cost one check) while keeping
// short the time a token killed right after its check is still defended.
const falseReportReuse = 5 * time.Second

// verifyReport checks an unproven report of failed, the current token of
// k's item, with one side-effect-free WeChat call. The caller holds k's lock,
// which makes concurrent reports on the leader (local or forwarded from any
// replica) share the check. It returns errStillAccepted when WeChat accepts
// the token, nil when WeChat rejects it or cannot tell (then the report is
// trusted: the force budget still bounds what it costs), or ctx's error.
func (b *Broker) verifyReport(ctx context.Context, k *task, failed string) error {
	it := k.it
	if k.accepted == failed && b.now().Sub(k.acceptedAt) < falseReportReuse {
		return errStillAccepted
	}
	cctx, cancel := context.WithTimeout(ctx, b.cfg.WeChat.Timeout)
	_, err := b.wx.APIDomainIP(cctx, failed)
	cancel()
	if err == nil {
		k.accepted, k.acceptedAt = failed, b.now()
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
	b.m.WeChatErrors.WithLabelValues(it.ns, it.appid, wechat.APIDomainIP, metrics.ErrcodeLabel(code)).Inc()
	b.log.Warn("cannot check the reported token with wechat; trusting the report",
		append(itemFields(it), zapTok(failed), zapErr(err))...)
	return nil
}
