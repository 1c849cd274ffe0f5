package ezthrottle_test

import (
	"testing"

	ezthrottle "github.com/ezthrottle/ezthrottle/sdks/go"
)

func TestTorrentAnswersTheTargetsResponseWithItsLegs(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	got, err := c.Torrent(ctxT(t), ezthrottle.TorrentSpec{
		URL: uniq(t, "/race"), Method: "POST", Body: "now", Timeout: "5s", IdempotentKey: "race-go",
	})
	if err != nil {
		t.Fatalf("torrent: %v", err)
	}
	if got.StatusCode != 200 || got.IdempotentKey != "race-go" {
		t.Fatalf("answer: %+v", got)
	}
	if len(got.Attempts) != 1 || got.Attempts[0].Outcome != "won" {
		t.Fatalf("legs: %+v", got.Attempts)
	}
}
