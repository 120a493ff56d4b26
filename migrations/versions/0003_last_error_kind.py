"""credentials.last_error_kind: the class of the last refresh failure, stored as a value

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 18:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# The codes a misconfiguration was recorded with until the kind was stored beside them.
MISCONFIGURATION_CODES = ("invalid_client", "unauthorized_client", "redirect_uri_mismatch",
                          "invalid_request", "invalid_scope", "unsupported_grant_type",
                          "misconfigured")


def upgrade():
    with op.batch_alter_table('credentials') as batch_op:
        batch_op.add_column(sa.Column('last_error_kind', sa.String(length=16), nullable=True))
    credentials = sa.table('credentials', sa.column('status', sa.String),
                           sa.column('last_error', sa.String),
                           sa.column('last_error_kind', sa.String))
    code = credentials.c.last_error
    op.execute(credentials.update().where(code.is_not(None)).values(last_error_kind=sa.case(
        (credentials.c.status == 'needs_reauth', 'invalid_grant'),
        (code.in_(MISCONFIGURATION_CODES), 'misconfigured'),
        (sa.and_(code.like('http\\_4%', escape='\\'), code != 'http_429'), 'misconfigured'),
        else_='unavailable',
    )))


def downgrade():
    with op.batch_alter_table('credentials') as batch_op:
        batch_op.drop_column('last_error_kind')
