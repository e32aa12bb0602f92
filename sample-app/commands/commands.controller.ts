import { BadRequestException, Controller, DefaultValuePipe, Get, ParseIntPipe, Query } from '@nestjs/common';
import { CommandsService } from './commands.service.js';
import type { CommandResult } from './commands.service.js';

@Controller('commands')
export class CommandsController {
  constructor(private readonly commands: CommandsService) {}

  /**
   * `GET /commands/sleep?seconds=10`: runs the external program `sleep`. Hang up or stop the server and the
   * log shows the child killed; `ps` shows it gone.
   */
  @Get('sleep')
  sleep(@Query('seconds', new DefaultValuePipe(10), ParseIntPipe) seconds: number): Promise<CommandResult> {
    if (seconds < 0 || seconds > 300) throw new BadRequestException('seconds must be from 0 to 300');
    return this.commands.sleep(seconds);
  }
}
