package msgcrypt_test

import (
	"fmt"
	"time"

	"github.com/wxbroker/wxbroker/wechat/msgcrypt"
)

// A component's event URL receives an encrypted push: check the timestamp,
// verify and decrypt, then read the event.
func Example() {
	c, err := msgcrypt.New("open-token", "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG", "wx00000000000000c1")
	if err != nil {
		panic(err)
	}
	now := time.Unix(1_700_000_000, 0)
	// What WeChat would send (a simulator does this).
	ev := msgcrypt.Event{AppID: "wx00000000000000c1", CreateTime: now, InfoType: msgcrypt.InfoVerifyTicket, VerifyTicket: "ticket@@@1"}
	push, err := c.Seal(ev.XML(), "1700000000", "1234567")
	if err != nil {
		panic(err)
	}

	// The receiver: the query's timestamp, nonce and msg_signature and the body.
	if _, err := msgcrypt.CheckTimestamp(push.Timestamp, now, 5*time.Minute); err != nil {
		panic(err)
	}
	msg, err := c.Open(push.MsgSignature, push.Timestamp, push.Nonce, push.Body)
	if err != nil {
		panic(err)
	}
	got, err := msgcrypt.ParseEvent(msg)
	if err != nil {
		panic(err)
	}
	fmt.Println(got.InfoType, got.VerifyTicket)
	// Output: component_verify_ticket ticket@@@1
}
