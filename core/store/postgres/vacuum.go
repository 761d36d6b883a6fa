package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// churned are the tables whose rows every delivery writes and deletes (deliveries: a row from intake to its
// completion; fanouts: a row per event whose deliveries are leased at birth, until they end) or rewrites (pending_counts: a row per writer and destination, updated by every commit). They
// stay small only while their dead rows are vacuumed away; PostgreSQL's autovacuum does that, unless it is
// off for the server or for the table. Then the leader does it (vacuumChurned), or deliveries would grow by
// the size of every delivery ever made, and each claim would scan the dead rows' index entries.
var churned = []string{"deliveries", "fanouts", "pending_counts"}

// vacuumDeadRows is how many dead rows, beyond the live ones, make the leader vacuum a churned table that
// autovacuum does not look after. Under load deliveries passes it within a second or two; each vacuum then
// reads a few megabytes.
const vacuumDeadRows = 10_000

// vacuumChurned vacuums, on c (outside any transaction, as VACUUM must run), the churned tables of this
// schema that autovacuum leaves alone and whose dead rows are past vacuumDeadRows. It reports the tables it
// vacuumed. The statistics it reads lag commits by up to a second, which only delays a vacuum by a round.
func (s *Store) vacuumChurned(ctx context.Context, c *pgx.Conn) ([]string, error) {
	rows, err := c.Query(ctx, `SELECT st.relname FROM pg_stat_user_tables st JOIN pg_class cl ON cl.oid = st.relid
		WHERE st.schemaname = current_schema() AND st.relname = ANY($1::text[]) AND st.n_dead_tup > $2 + st.n_live_tup
		  AND (NOT current_setting('autovacuum')::bool OR NOT COALESCE(
		    (SELECT o.option_value::bool FROM pg_options_to_table(cl.reloptions) o WHERE o.option_name = 'autovacuum_enabled'),
		    true))`, churned, vacuumDeadRows)
	if err != nil {
		return nil, fmt.Errorf("read dead rows: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read dead rows: %w", err)
	}
	for _, name := range names {
		// SKIP_LOCKED: a vacuum already under way (an operator's, or autovacuum's against wraparound, which runs
		// even when autovacuum is off) does the work; the leader does not wait for it. ANALYZE: nothing else
		// renews these tables' statistics either, and plans made from a new table's (a queue that is always
		// nearly empty) go wrong once a backlog builds up. It reads a sample of the live rows, few in a queue.
		if _, err := c.Exec(ctx, `VACUUM (ANALYZE, SKIP_LOCKED) `+pgx.Identifier{name}.Sanitize()); err != nil {
			return nil, fmt.Errorf("vacuum %s: %w", name, err)
		}
	}
	return names, nil
}
