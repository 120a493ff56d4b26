"""credentials.account: what a caller needs beside the token about the account (Slack's team,
Notion's workspace, Microsoft's tenant), as the provider's plugin returns it; NULL when it
returns none

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-05 08:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('credentials') as batch_op:
        batch_op.add_column(sa.Column('account', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('credentials') as batch_op:
        batch_op.drop_column('account')
